// SPDX-License-Identifier: Apache-2.0

// refsnap serves containerd's own overlayfs (or native) snapshotter over containerd's
// snapshots.v1 gRPC API on a unix socket, through contrib/snapshotservice: the same kind of
// proxy snapshotter as containerd-nydus-grpc. It is the reference that the conformance runner
// and bench/snapshotter compare ours against.
//
//	refsnap --root DIR --address SOCK [--kind overlayfs|native] [--async-remove=true]
//
// It exits 0 on SIGTERM or SIGINT after the server has stopped.
//
// With CFN_SNAPSHOTTER_CRASH_AT set it raises SIGKILL at the points of containerd-nydus-grpc
// that a wrapper around the snapshotter can reach (prepare-after-commit, commit-before-sql,
// commit-after-sql, remove-after-sql), so the crash test can be tried against it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "snapshotter root directory (required)")
	address := flag.String("address", "", "unix socket to serve on (required)")
	kind := flag.String("kind", "overlayfs", "overlayfs or native")
	// containerd's in-daemon overlayfs plugin removes directories in Cleanup, not in Remove.
	asyncRemove := flag.Bool("async-remove", true, "overlayfs: leave removed directories to Cleanup, as containerd's plugin does")
	flag.Parse()
	if *root == "" || *address == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: refsnap --root DIR --address SOCK [--kind overlayfs|native]")
		os.Exit(2)
	}

	var sn snapshots.Snapshotter
	var err error
	switch *kind {
	case "overlayfs":
		var opts []overlay.Opt
		if *asyncRemove {
			opts = append(opts, overlay.AsynchronousRemove)
		}
		sn, err = overlay.NewSnapshotter(*root, opts...)
	case "native":
		sn, err = native.NewSnapshotter(*root)
	default:
		err = fmt.Errorf("unknown --kind %q (overlayfs or native)", *kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "refsnap: %v\n", err)
		os.Exit(1)
	}
	defer sn.Close()

	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "refsnap: %v\n", err)
		os.Exit(1)
	}
	if err := os.Remove(*address); err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "refsnap: %v\n", err)
		os.Exit(1)
	}
	l, err := net.Listen("unix", *address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refsnap: listen %s: %v\n", *address, err)
		os.Exit(1)
	}

	if point := os.Getenv("CFN_SNAPSHOTTER_CRASH_AT"); point != "" {
		sn = crashing{Snapshotter: sn, point: point}
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		rpc.GracefulStop()
	}()
	if err := rpc.Serve(l); err != nil {
		fmt.Fprintf(os.Stderr, "refsnap: serve: %v\n", err)
		os.Exit(1)
	}
}

// crashing raises SIGKILL at the named point around the wrapped snapshotter's calls.
type crashing struct {
	snapshots.Snapshotter
	point string
}

func (c crashing) at(point string) {
	if c.point == point {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

func (c crashing) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	m, err := c.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err == nil {
		c.at("prepare-after-commit")
	}
	return m, err
}

func (c crashing) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	c.at("commit-before-sql")
	err := c.Snapshotter.Commit(ctx, name, key, opts...)
	if err == nil {
		c.at("commit-after-sql")
	}
	return err
}

func (c crashing) Remove(ctx context.Context, key string) error {
	err := c.Snapshotter.Remove(ctx, key)
	if err == nil {
		c.at("remove-after-sql")
	}
	return err
}

func (c crashing) Cleanup(ctx context.Context) error {
	if cl, ok := c.Snapshotter.(snapshots.Cleaner); ok {
		return cl.Cleanup(ctx)
	}
	return nil
}
