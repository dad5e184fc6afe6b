// SPDX-License-Identifier: Apache-2.0

// Package snaptest runs containerd's snapshotter conformance suite (snapshots/testsuite)
// against a proxy snapshotter: the factory starts one server process per sub-test, as
//
//	$SNAPSERVER --root ROOT/data --address ROOT/snap.sock
//
// (the socket goes to a short directory in /tmp instead when ROOT is too deep for a socket path)
// (SNAPSERVER is a command line split on blanks), dials it like containerd's proxy_plugins do,
// and stops it with SIGTERM at the end of the sub-test, which must then exit 0. The
// sub-tests run in parallel, each with its own root, so every one gets its own server.
// Run the compiled test binary as root with -test.root (the suite mounts).
package snaptest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/testsuite"

	"snapclient"
)

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	// A unix socket's path must fit sun_path (108 bytes with its NUL).
	maxSocketPath = 100
)

// serverLog reads the server's output file when an error message needs it.
type serverLog string

func (l serverLog) String() string {
	b, err := os.ReadFile(string(l))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func newProxy(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	argv := strings.Fields(os.Getenv("SNAPSERVER"))
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("SNAPSERVER is not set")
	}
	sock := filepath.Join(root, "snap.sock")
	sockDir := ""
	if len(sock) >= maxSocketPath {
		// sun_path holds 108 bytes: a deep TMPDIR gets the socket in a short directory.
		d, err := os.MkdirTemp("/tmp", "cfn-snap-")
		if err != nil {
			return nil, nil, err
		}
		sockDir = d
		sock = filepath.Join(d, "snap.sock")
	}
	argv = append(argv, "--root", filepath.Join(root, "data"), "--address", sock)
	cmd := exec.Command(argv[0], argv[1:]...)
	logPath := filepath.Join(root, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %v: %w", argv, err)
	}
	out := serverLog(logPath)
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	kill := func() {
		_ = cmd.Process.Kill()
		<-done
		if sockDir != "" {
			os.RemoveAll(sockDir)
		}
	}
	if err := snapclient.WaitSocket(sock, done, readyTimeout); err != nil {
		kill()
		return nil, nil, fmt.Errorf("%v: %w; output:\n%s", argv, err, out.String())
	}
	sn, conn, err := snapclient.Dial(ctx, sock)
	if err != nil {
		kill()
		return nil, nil, fmt.Errorf("%v: %w; output:\n%s", argv, err, out.String())
	}
	cleanup := func() error {
		conn.Close()
		if sockDir != "" {
			defer os.RemoveAll(sockDir)
		}
		select {
		case <-done:
			return fmt.Errorf("server died during the test (%v); output:\n%s", waitErr, out.String())
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			kill()
			return fmt.Errorf("server did not exit within %v of SIGTERM; output:\n%s", stopTimeout, out.String())
		}
		if waitErr != nil {
			return fmt.Errorf("server exit after SIGTERM: %v; output:\n%s", waitErr, out.String())
		}
		return nil
	}
	return sn, cleanup, nil
}

func TestSnapshotterSuite(t *testing.T) {
	testsuite.SnapshotterSuite(t, "Proxy", newProxy)
}
