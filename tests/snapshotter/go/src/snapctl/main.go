// SPDX-License-Identifier: Apache-2.0

// snapctl drives a snapshots.v1 gRPC server on a unix socket directly (no containerd), for the
// snapshotter's crash and end-to-end tests. Every command prints one JSON value on stdout.
// A failed RPC exits 3 and prints {"error": "...", "code": "NotFound"|...} on stdout.
//
//	snapctl -a SOCK [-n NAMESPACE] prepare KEY [PARENT] [k=v ...]   -> mounts
//	snapctl -a SOCK view KEY PARENT                                  -> mounts
//	snapctl -a SOCK commit NAME KEY
//	snapctl -a SOCK rm KEY
//	snapctl -a SOCK stat KEY                                          -> info
//	snapctl -a SOCK ls                                                -> [info...]
//	snapctl -a SOCK mounts KEY                                        -> mounts
//	snapctl -a SOCK usage KEY                                         -> {"size","inodes"}
//	snapctl -a SOCK cleanup
//	snapctl -a SOCK dirs ROOT                                         -> owners of ROOT/snapshots/*
//
// `dirs` maps every snapshot to the directory under ROOT/snapshots that its mounts name (a
// committed snapshot through a temporary view, removed again) and lists the directories no
// snapshot owns (orphans) and the snapshots whose directory is missing.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"

	"snapclient"
)

type infoJSON struct {
	Name    string            `json:"name"`
	Parent  string            `json:"parent"`
	Kind    string            `json:"kind"`
	Labels  map[string]string `json:"labels"`
	Created string            `json:"created"`
	Updated string            `json:"updated"`
}

func toJSON(i snapshots.Info) infoJSON {
	return infoJSON{Name: i.Name, Parent: i.Parent, Kind: i.Kind.String(), Labels: i.Labels,
		Created: i.Created.UTC().Format("2006-01-02T15:04:05.000000000Z"),
		Updated: i.Updated.UTC().Format("2006-01-02T15:04:05.000000000Z")}
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
}

func errCode(err error) string {
	switch {
	case errdefs.IsNotFound(err):
		return "NotFound"
	case errdefs.IsAlreadyExists(err):
		return "AlreadyExists"
	case errdefs.IsFailedPrecondition(err):
		return "FailedPrecondition"
	case errdefs.IsInvalidArgument(err):
		return "InvalidArgument"
	case errdefs.IsUnavailable(err):
		return "Unavailable"
	case errdefs.IsNotImplemented(err):
		return "NotImplemented"
	default:
		return "Unknown"
	}
}

func die(err error) {
	emit(map[string]string{"error": err.Error(), "code": errCode(err)})
	os.Exit(3)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: snapctl -a SOCK [-n NS] prepare|view|commit|rm|stat|ls|mounts|usage|cleanup|dirs ARGS")
	os.Exit(2)
}

func need(args []string, min, max int) {
	if len(args) < min || (max >= 0 && len(args) > max) {
		usage()
	}
}

func labelsOf(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("label %q is not k=v", a)
		}
		m[k] = v
	}
	return m, nil
}

// dirUnder returns the name of the directory directly under base that path lies in, or "".
func dirUnder(base, path string) string {
	rel, err := filepath.Rel(base, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return ""
	}
	return strings.SplitN(rel, string(filepath.Separator), 2)[0]
}

// mountDirs returns, in order, the directories under base named by the mounts: the bind
// source, or overlay upperdir then each lowerdir.
func mountDirs(base string, ms []mount.Mount) (upper string, lowers []string) {
	for _, m := range ms {
		if m.Type == "bind" || m.Type == "rbind" {
			upper = dirUnder(base, m.Source)
			continue
		}
		for _, o := range m.Options {
			switch {
			case strings.HasPrefix(o, "upperdir="):
				upper = dirUnder(base, strings.TrimPrefix(o, "upperdir="))
			case strings.HasPrefix(o, "lowerdir="):
				for _, l := range strings.Split(strings.TrimPrefix(o, "lowerdir="), ":") {
					lowers = append(lowers, dirUnder(base, l))
				}
			}
		}
	}
	return upper, lowers
}

type dirsReport struct {
	Snapshots int               `json:"snapshots"`
	Owner     map[string]string `json:"owner"`    // snapshot name -> directory
	Dirs      []string          `json:"dirs"`     // directories under ROOT/snapshots before the check
	Removing  []string          `json:"removing"` // trees under ROOT/removing (being removed)
	Orphans   []string          `json:"orphans"`  // directories no snapshot owns
	Missing   []string          `json:"missing"`  // snapshots whose directory is not there
	Problems  []string          `json:"problems"`
	Unknown   []string          `json:"unknown"` // views whose own directory their mounts do not name
}

func dirs(ctx context.Context, sn snapshots.Snapshotter, root string) error {
	base := filepath.Join(root, "snapshots")
	ents, err := os.ReadDir(base)
	if err != nil {
		return err
	}
	rep := dirsReport{Owner: map[string]string{}, Dirs: []string{}, Removing: []string{},
		Orphans: []string{}, Missing: []string{}, Problems: []string{}, Unknown: []string{}}
	for _, e := range ents {
		rep.Dirs = append(rep.Dirs, e.Name())
	}
	removing, err := os.ReadDir(filepath.Join(root, "removing"))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range removing {
		rep.Removing = append(rep.Removing, e.Name())
	}
	var infos []snapshots.Info
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		infos = append(infos, i)
		return nil
	}); err != nil {
		return err
	}
	rep.Snapshots = len(infos)
	byName := map[string]snapshots.Info{}
	for _, i := range infos {
		byName[i.Name] = i
	}
	// Active and view snapshots name their own directory and their parents' (in order).
	for _, i := range infos {
		if i.Kind == snapshots.KindCommitted {
			continue
		}
		ms, err := sn.Mounts(ctx, i.Name)
		if err != nil {
			return fmt.Errorf("mounts %q: %w", i.Name, err)
		}
		upper, lowers := mountDirs(base, ms)
		switch {
		case i.Kind == snapshots.KindActive || i.Parent == "":
			rep.Owner[i.Name] = upper
		case len(lowers) == 0:
			// A view of one committed parent is a read-only bind of the parent's directory;
			// the view's own directory is not named.
			rep.Owner[i.Parent] = upper
			rep.Unknown = append(rep.Unknown, i.Name)
			continue
		default:
			rep.Unknown = append(rep.Unknown, i.Name)
		}
		p := i.Parent
		for _, l := range lowers {
			if p == "" {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: more lowerdirs than parents", i.Name))
				break
			}
			rep.Owner[p] = l
			p = byName[p].Parent
		}
	}
	// Committed snapshots not reached so far: a temporary view of each.
	n := 0
	for _, i := range infos {
		if _, ok := rep.Owner[i.Name]; ok || i.Kind != snapshots.KindCommitted {
			continue
		}
		key := fmt.Sprintf("snapctl-dirs-view-%d-%d", os.Getpid(), n)
		n++
		ms, err := sn.View(ctx, key, i.Name)
		if err != nil {
			return fmt.Errorf("view of %q: %w", i.Name, err)
		}
		upper, lowers := mountDirs(base, ms)
		if len(lowers) > 0 {
			rep.Owner[i.Name] = lowers[0]
		} else {
			rep.Owner[i.Name] = upper
		}
		if err := sn.Remove(ctx, key); err != nil {
			return fmt.Errorf("remove %q: %w", key, err)
		}
	}
	owned := map[string]string{}
	for name, d := range rep.Owner {
		if d == "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: its mounts name no directory under %s", name, base))
			continue
		}
		if other, ok := owned[d]; ok {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s and %s share directory %s", name, other, d))
		}
		owned[d] = name
		if _, err := os.Stat(filepath.Join(base, d)); err != nil {
			rep.Missing = append(rep.Missing, name)
		}
	}
	for _, i := range infos {
		if _, ok := rep.Owner[i.Name]; !ok && i.Kind != snapshots.KindView {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: no directory found", i.Name))
		}
	}
	for _, d := range rep.Dirs {
		if _, ok := owned[d]; !ok {
			rep.Orphans = append(rep.Orphans, d)
		}
	}
	sort.Strings(rep.Orphans)
	sort.Strings(rep.Missing)
	emit(rep)
	return nil
}

func main() {
	sock := flag.String("a", "", "snapshotter socket (required)")
	ns := flag.String("n", "default", "containerd namespace sent with each call")
	flag.Parse()
	args := flag.Args()
	if *sock == "" || len(args) == 0 {
		usage()
	}
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	sn, conn, err := snapclient.Dial(ctx, *sock)
	if err != nil {
		die(err)
	}
	defer conn.Close()

	cmd, args := args[0], args[1:]
	switch cmd {
	case "prepare", "view":
		need(args, 1, -1)
		parent := ""
		rest := []string{}
		if len(args) > 1 {
			if strings.Contains(args[1], "=") {
				rest = args[1:]
			} else {
				parent, rest = args[1], args[2:]
			}
		}
		labels, lerr := labelsOf(rest)
		if lerr != nil {
			die(errdefs.ErrInvalidArgument)
		}
		var opts []snapshots.Opt
		if labels != nil {
			opts = append(opts, snapshots.WithLabels(labels))
		}
		var ms []mount.Mount
		if cmd == "prepare" {
			ms, err = sn.Prepare(ctx, args[0], parent, opts...)
		} else {
			ms, err = sn.View(ctx, args[0], parent, opts...)
		}
		if err == nil {
			emit(ms)
		}
	case "commit":
		need(args, 2, 2)
		if err = sn.Commit(ctx, args[0], args[1]); err == nil {
			emit(map[string]string{})
		}
	case "rm":
		need(args, 1, 1)
		if err = sn.Remove(ctx, args[0]); err == nil {
			emit(map[string]string{})
		}
	case "stat":
		need(args, 1, 1)
		var i snapshots.Info
		if i, err = sn.Stat(ctx, args[0]); err == nil {
			emit(toJSON(i))
		}
	case "ls":
		need(args, 0, -1)
		out := []infoJSON{}
		err = sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
			out = append(out, toJSON(i))
			return nil
		}, args...)
		if err == nil {
			emit(out)
		}
	case "mounts":
		need(args, 1, 1)
		var ms []mount.Mount
		if ms, err = sn.Mounts(ctx, args[0]); err == nil {
			emit(ms)
		}
	case "usage":
		need(args, 1, 1)
		var u snapshots.Usage
		if u, err = sn.Usage(ctx, args[0]); err == nil {
			emit(map[string]int64{"size": u.Size, "inodes": u.Inodes})
		}
	case "cleanup":
		need(args, 0, 0)
		c, ok := sn.(snapshots.Cleaner)
		if !ok {
			err = errors.New("proxy snapshotter has no Cleanup")
		} else if err = c.Cleanup(ctx); err == nil {
			emit(map[string]string{})
		}
	case "dirs":
		need(args, 1, 1)
		err = dirs(ctx, sn, args[0])
	default:
		usage()
	}
	if err != nil {
		die(err)
	}
}
