// SPDX-License-Identifier: Apache-2.0

// Package snapclient dials a snapshots.v1 gRPC server on a unix socket and wraps it in
// containerd's proxy snapshotter, the way containerd's proxy_plugins do.
package snapclient

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

// Dial connects to the socket at path (it must exist) and returns the proxy snapshotter and
// the connection to close.
func Dial(ctx context.Context, path string) (snapshots.Snapshotter, *grpc.ClientConn, error) {
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, path, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer), grpc.FailOnNonTempDialError(true))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "proxy"), conn, nil
}

// WaitSocket waits until path is a socket that accepts a connection, the process behind done
// has exited (an error), or the deadline passes. It polls: a server gives no other sign of
// being ready.
func WaitSocket(path string, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", path); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("server exited before %s accepted a connection", path)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
