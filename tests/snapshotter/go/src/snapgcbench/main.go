// SPDX-License-Identifier: Apache-2.0

// snapgcbench times Prepare + Commit on a snapshots.v1 server (our snapshotter, bound to a
// daemon) while other clients remove many snapshots, against the same with no removal, and
// prints the p50 / p99 of both and their ratios (bench/snapgc drives it).
//
//	snapgcbench -a SOCK -root ROOT -image-ref REF -manifest DIGEST -layers D1,D2,... -boot FILE
//	            [-images 200] [-plain 200] [-files 20] [-removers 4] [-rounds 4] [-samples 400]
//	            [-json] [-phases FILE]
//
// Setup (not timed): -images nydus images, each made the way containerd's unpack of
// `ctr-remote image rpull` makes one (the data layers -layers by the remote-snapshot
// handshake, the bootstrap layer labelled nydus-bootstrap holding FILE as image/image.boot),
// each with an active snapshot on it, so the snapshotter binds and mounts every one in the
// daemon (ROOT/mnt/<id>); and -plain committed overlay snapshots of -files files each.
//
// Then, -rounds times: a base phase, -samples/-rounds Prepare + Commit pairs of new plain
// layers timed with nothing else going on (one sample per pair, each on the previous
// committed layer, chains restarted every 50 layers); and a removal phase, the same pairs
// timed while -removers clients remove a -rounds'th part of the snapshots made at setup, as
// fast as they answer: each nydus image top down (its active snapshot; its bootstrap
// snapshot, whose unmount and unbind the snapshotter queues to its background thread; its
// data layers) and plain snapshots, until every Remove returned and the part's mounts under
// ROOT/mnt are gone (the background unbinds done). A last base phase closes. Base and
// removal phases alternate so that the machine's drifting load hits both alike.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"golang.org/x/sys/unix"

	"snapclient"
)

const (
	labelRef         = "containerd.io/snapshot.ref"
	labelNydusBlob   = "containerd.io/snapshot/nydus-blob"
	labelNydusBoot   = "containerd.io/snapshot/nydus-bootstrap"
	labelImageRef    = "containerd.io/snapshot/cri.image-ref"
	labelLayerDigest = "containerd.io/snapshot/cri.layer-digest"
	labelManifest    = "containerd.io/snapshot/cri.manifest-digest"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "snapgcbench: "+format+"\n", a...)
	os.Exit(1)
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

// mountsUnder counts the mounts whose target is under dir (from /proc/self/mountinfo).
func mountsUnder(dir string) int {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		die("mountinfo: %v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			n++
		}
	}
	return n
}

type bench struct {
	ctx      context.Context
	sn       snapshots.Snapshotter
	imageRef string
	manifest string
	layers   []string
	boot     []byte
	tmp      string
}

// writeInto mounts the snapshot's mounts on a temporary directory, lets fill write into
// it, and unmounts (the way containerd's unpack applies a layer).
func (b *bench) writeInto(key string, ms []mount.Mount, fill func(dir string) error) {
	dir, err := os.MkdirTemp(b.tmp, "m-")
	if err != nil {
		die("%v", err)
	}
	defer os.Remove(dir)
	if err := mount.All(ms, dir); err != nil {
		die("mount %s: %v", key, err)
	}
	ferr := fill(dir)
	if err := mount.UnmountAll(dir, 0); err != nil {
		die("unmount %s: %v", key, err)
	}
	if ferr != nil {
		die("write into %s: %v", key, ferr)
	}
}

// nydusImage makes image i: handshake layers, the bootstrap layer, an active snapshot on it.
func (b *bench) nydusImage(i int) {
	parent := ""
	for l, dg := range b.layers {
		name := fmt.Sprintf("gc/img%d/layer%d", i, l)
		labels := map[string]string{labelRef: name, labelNydusBlob: "true",
			labelImageRef: b.imageRef, labelLayerDigest: dg, labelManifest: b.manifest}
		_, err := b.sn.Prepare(b.ctx, fmt.Sprintf("gc/img%d/extract%d", i, l), parent,
			snapshots.WithLabels(labels))
		if !errdefs.IsAlreadyExists(err) {
			die("handshake of image %d layer %d: want AlreadyExists, got %v", i, l, err)
		}
		parent = name
	}
	labels := map[string]string{labelNydusBoot: "true", labelImageRef: b.imageRef,
		labelManifest: b.manifest}
	key := fmt.Sprintf("gc/img%d/extract-boot", i)
	ms, err := b.sn.Prepare(b.ctx, key, parent, snapshots.WithLabels(labels))
	if err != nil {
		die("prepare the bootstrap layer of image %d: %v", i, err)
	}
	b.writeInto(key, ms, func(dir string) error {
		if err := os.MkdirAll(filepath.Join(dir, "image"), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "image", "image.boot"), b.boot, 0o644)
	})
	boot := fmt.Sprintf("gc/img%d/boot", i)
	if err := b.sn.Commit(b.ctx, boot, key, snapshots.WithLabels(labels)); err != nil {
		die("commit the bootstrap layer of image %d: %v", i, err)
	}
	if _, err := b.sn.Prepare(b.ctx, fmt.Sprintf("gc/img%d/active", i), boot); err != nil {
		die("prepare a container snapshot on image %d: %v", i, err)
	}
}

func (b *bench) removeImage(i int) {
	keys := []string{fmt.Sprintf("gc/img%d/active", i), fmt.Sprintf("gc/img%d/boot", i)}
	for l := len(b.layers) - 1; l >= 0; l-- {
		keys = append(keys, fmt.Sprintf("gc/img%d/layer%d", i, l))
	}
	for _, k := range keys {
		if err := b.sn.Remove(b.ctx, k); err != nil {
			die("remove %s: %v", k, err)
		}
	}
}

func (b *bench) plain(j, files int) {
	key := fmt.Sprintf("gc/plain%d/extract", j)
	ms, err := b.sn.Prepare(b.ctx, key, "")
	if err != nil {
		die("prepare %s: %v", key, err)
	}
	b.writeInto(key, ms, func(dir string) error {
		for f := 0; f < files; f++ {
			p := filepath.Join(dir, fmt.Sprintf("d%d", f%4), fmt.Sprintf("f%d", f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, make([]byte, 4096+f), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err := b.sn.Commit(b.ctx, fmt.Sprintf("gc/plain%d", j), key); err != nil {
		die("commit %s: %v", key, err)
	}
}

// sampler makes Prepare + Commit pairs of plain layers and times each pair.
type sampler struct {
	b      *bench
	n      int
	parent string
	stat   []time.Duration // Stat after each pair
}

func (s *sampler) one() time.Duration {
	key := fmt.Sprintf("gc/sample%d/extract", s.n)
	name := fmt.Sprintf("gc/sample%d", s.n)
	if s.n%50 == 0 {
		s.parent = ""
	}
	s.n++
	start := time.Now()
	if _, err := s.b.sn.Prepare(s.b.ctx, key, s.parent); err != nil {
		die("prepare %s: %v", key, err)
	}
	if err := s.b.sn.Commit(s.b.ctx, name, key); err != nil {
		die("commit %s: %v", name, err)
	}
	d := time.Since(start)
	s.parent = name
	// The control: Stat takes no write lock (the store's readers' connection).
	start = time.Now()
	if _, err := s.b.sn.Stat(s.b.ctx, name); err != nil {
		die("stat %s: %v", name, err)
	}
	s.stat = append(s.stat, time.Since(start))
	return d
}

// monoNs is CLOCK_MONOTONIC in ns: the clock of perf's timestamps on this kernel (perf
// record's default), so that -phases can split a system-wide trace by phase.
func monoNs() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		die("clock_gettime: %v", err)
	}
	return ts.Nano()
}

func main() {
	sock := flag.String("a", "", "socket of the snapshotter")
	root := flag.String("root", "", "the snapshotter's root (its image mounts are under ROOT/mnt)")
	imageRef := flag.String("image-ref", "", "the nydus image's reference")
	manifest := flag.String("manifest", "", "its manifest digest")
	layers := flag.String("layers", "", "its data layers' digests, comma-separated")
	bootPath := flag.String("boot", "", "its bootstrap (image/image.boot of its bootstrap layer)")
	images := flag.Int("images", 200, "nydus images (bootstrap snapshots) removed")
	plainN := flag.Int("plain", 200, "plain committed snapshots removed")
	files := flag.Int("files", 20, "files in each plain snapshot")
	removers := flag.Int("removers", 4, "clients removing at once")
	rounds := flag.Int("rounds", 4, "the removal in this many parts, each between two base phases")
	samples := flag.Int("samples", 400, "Prepare + Commit samples with no removal, spread over the base phases")
	asJSON := flag.Bool("json", false, "print the result as JSON too")
	phasesPath := flag.String("phases", "", "append each phase as 'base|removal START END' (CLOCK_MONOTONIC ns) to this file")
	flag.Parse()
	var phases *os.File
	if *phasesPath != "" {
		var err error
		if phases, err = os.OpenFile(*phasesPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			die("%v", err)
		}
		defer phases.Close()
	}
	phase := func(kind string, start int64) {
		if phases != nil {
			fmt.Fprintf(phases, "%s %d %d\n", kind, start, monoNs())
		}
	}
	if *sock == "" || *root == "" || *imageRef == "" || *layers == "" || *bootPath == "" ||
		*removers < 1 || *rounds < 1 || *samples < 10*(*rounds) {
		fmt.Fprintln(os.Stderr, "usage: snapgcbench -a SOCK -root ROOT -image-ref REF -manifest D -layers D1,... -boot FILE [options]")
		os.Exit(2)
	}
	boot, err := os.ReadFile(*bootPath)
	if err != nil {
		die("%v", err)
	}
	tmp, err := os.MkdirTemp("", "snapgcbench-")
	if err != nil {
		die("%v", err)
	}
	defer os.RemoveAll(tmp)
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	sn, conn, err := snapclient.Dial(ctx, *sock)
	if err != nil {
		die("%v", err)
	}
	defer conn.Close()
	b := &bench{ctx: ctx, sn: sn, imageRef: *imageRef, manifest: *manifest,
		layers: strings.Split(*layers, ","), boot: boot, tmp: tmp}
	mnt := filepath.Join(*root, "mnt")

	t0 := time.Now()
	for i := 0; i < *images; i++ {
		b.nydusImage(i)
	}
	if got := mountsUnder(mnt); got != *images {
		die("%d nydus images made, %d mounts under %s", *images, got, mnt)
	}
	for j := 0; j < *plainN; j++ {
		b.plain(j, *files)
	}
	fmt.Printf("setup: %d nydus images bound and mounted, %d plain snapshots of %d files, in %.1f s\n",
		*images, *plainN, *files, time.Since(t0).Seconds())

	s := &sampler{b: b}
	var base, during []time.Duration
	var statBase, statDuring []time.Duration
	// take moves the Stat samples taken since the last call to *into.
	take := func(into *[]time.Duration) {
		*into = append(*into, s.stat...)
		s.stat = s.stat[:0]
	}
	var rmCalls, unbound time.Duration
	perPhase := *samples / *rounds
	for g := 0; g < *rounds; g++ {
		t := monoNs()
		for i := 0; i < perPhase; i++ {
			base = append(base, s.one())
		}
		phase("base", t)
		take(&statBase)
		// This round's share: a queue of jobs (images and plain snapshots interleaved).
		i0, i1 := g**images / *rounds, (g+1)**images / *rounds
		p0, p1 := g**plainN / *rounds, (g+1)**plainN / *rounds
		jobs := make(chan func(), (i1-i0)+(p1-p0))
		for k := 0; k < i1-i0 || k < p1-p0; k++ {
			if k < i1-i0 {
				i := i0 + k
				jobs <- func() { b.removeImage(i) }
			}
			if k < p1-p0 {
				j := p0 + k
				jobs <- func() {
					if err := b.sn.Remove(b.ctx, fmt.Sprintf("gc/plain%d", j)); err != nil {
						die("remove plain %d: %v", j, err)
					}
				}
			}
		}
		close(jobs)
		left := *images - i1 // mounts left once this round's unbinds are done
		var wg sync.WaitGroup
		var removesDone atomic.Bool
		var calls time.Duration
		rmMono := monoNs()
		rmStart := time.Now()
		for r := 0; r < *removers; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					j()
				}
			}()
		}
		go func() {
			wg.Wait()
			calls = time.Since(rmStart)
			removesDone.Store(true)
		}()
		// Samples while the removal is under way: until every Remove returned and the
		// background unbinds are done.
		for {
			during = append(during, s.one())
			if removesDone.Load() && mountsUnder(mnt) <= left {
				break
			}
			if time.Since(rmStart) > 10*time.Minute {
				die("the removal did not end within 10 minutes (%d mounts left)", mountsUnder(mnt))
			}
		}
		unbound += time.Since(rmStart)
		phase("removal", rmMono)
		rmCalls += calls
		take(&statDuring)
	}
	t := monoNs()
	for i := 0; i < perPhase; i++ {
		base = append(base, s.one())
	}
	phase("base", t)
	take(&statBase)
	bp50, bp99 := quantile(base, 0.5), quantile(base, 0.99)
	dp50, dp99 := quantile(during, 0.5), quantile(during, 0.99)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("removal: %d nydus images (%d snapshots each) and %d plain snapshots by %d clients, "+
		"in %d rounds: Remove calls %.2f s, every mount gone (background unbinds) %.2f s in all\n",
		*images, len(b.layers)+2, *plainN, *removers, *rounds, rmCalls.Seconds(), unbound.Seconds())
	fmt.Printf("%-34s %10s %10s %8s\n", "Prepare + Commit", "p50 ms", "p99 ms", "samples")
	fmt.Printf("%-34s %10.2f %10.2f %8d\n", "no removal (base)", ms(bp50), ms(bp99), len(base))
	fmt.Printf("%-34s %10.2f %10.2f %8d\n", "during the removal", ms(dp50), ms(dp99), len(during))
	fmt.Printf("%-34s %10.2f %10.2f\n", "ratio (during / base)",
		float64(dp50)/float64(bp50), float64(dp99)/float64(bp99))
	sb50, sb99 := quantile(statBase, 0.5), quantile(statBase, 0.99)
	sd50, sd99 := quantile(statDuring, 0.5), quantile(statDuring, 0.99)
	fmt.Printf("%-34s %10s %10s %8s\n", "Stat (control: no write lock)", "p50 ms", "p99 ms", "samples")
	fmt.Printf("%-34s %10.2f %10.2f %8d\n", "no removal (base)", ms(sb50), ms(sb99), len(statBase))
	fmt.Printf("%-34s %10.2f %10.2f %8d\n", "during the removal", ms(sd50), ms(sd99), len(statDuring))
	fmt.Printf("%-34s %10.2f %10.2f\n", "ratio (during / base)",
		float64(sd50)/float64(sb50), float64(sd99)/float64(sb99))
	if *asJSON {
		out, _ := json.Marshal(map[string]interface{}{
			"base_p50_ms": ms(bp50), "base_p99_ms": ms(bp99), "during_p50_ms": ms(dp50),
			"during_p99_ms": ms(dp99), "ratio_p50": float64(dp50) / float64(bp50),
			"ratio_p99": float64(dp99) / float64(bp99), "samples_base": len(base),
			"samples_during": len(during), "remove_calls_s": rmCalls.Seconds(),
			"stat_ratio_p50": float64(sd50) / float64(sb50), "stat_ratio_p99": float64(sd99) / float64(sb99),
			"unbound_s": unbound.Seconds()})
		fmt.Println(string(out))
	}
	// The samples' snapshots go too.
	for k := s.n - 1; k >= 0; k-- {
		_ = b.sn.Remove(b.ctx, fmt.Sprintf("gc/sample%d", k))
	}
}
