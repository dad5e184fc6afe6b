// SPDX-License-Identifier: Apache-2.0

// snapbench times snapshots.v1 calls against two proxy snapshotters on unix sockets (ours and
// a reference, served the same way) and prints per-operation median latencies and the ratio
// ours/reference. The two are driven alternately, phase by phase, so background load on the
// machine hits both alike.
//
//	snapbench -ours SOCK -ref SOCK [-layers 50] [-rounds 3] [-walk 10000] [-walk-group 100]
//	          [-repeat 200] [-json]
//
// Phases (each on both servers):
//   - chain: Prepare + Commit of a -layers deep chain (each layer's Prepare has the previous
//     layer as parent), -rounds times; one sample per call;
//   - mounts: Mounts of an active snapshot on top of the deepest chain, -repeat times;
//   - stat: Stat of committed layers, -repeat times;
//   - walk: -walk active snapshots are made (not timed, 8 at a time), one in -walk-group of
//     them carries label bench/group=hit; then Walk with the filter labels."bench/group"==hit,
//     -repeat/10 times (at least 5);
//   - remove: Remove of every chain top-down; then one Cleanup per server; and the sum of
//     both (containerd's overlayfs plugin removes directories in Cleanup, not in Remove).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"

	"snapclient"
)

type target struct {
	name string
	sn   snapshots.Snapshotter
	// samples per operation, in nanoseconds
	samples map[string][]time.Duration
}

func (t *target) time(op string, f func() error) {
	start := time.Now()
	err := f()
	d := time.Since(start)
	if err != nil {
		fmt.Fprintf(os.Stderr, "snapbench: %s: %s: %v\n", t.name, op, err)
		os.Exit(1)
	}
	t.samples[op] = append(t.samples[op], d)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// order returns the targets with the first one alternating with i, so that neither server
// always runs right after the other.
func order(ts []*target, i int) []*target {
	if i%2 == 0 {
		return ts
	}
	return []*target{ts[1], ts[0]}
}

func chainKey(round, layer int) string  { return fmt.Sprintf("bench/r%d/extract-%d", round, layer) }
func chainName(round, layer int) string { return fmt.Sprintf("bench/r%d/layer-%d", round, layer) }

func main() {
	ours := flag.String("ours", "", "socket of the snapshotter under test")
	ref := flag.String("ref", "", "socket of the reference snapshotter")
	layers := flag.Int("layers", 50, "depth of each chain")
	rounds := flag.Int("rounds", 3, "chains made (and removed) per server")
	walkN := flag.Int("walk", 10000, "snapshots present for the Walk phase")
	walkGroup := flag.Int("walk-group", 100, "one in this many carries the label the Walk filters on")
	repeat := flag.Int("repeat", 200, "samples of Mounts and Stat")
	asJSON := flag.Bool("json", false, "print the medians as JSON too")
	flag.Parse()
	if *ours == "" || *ref == "" || *layers < 1 || *rounds < 1 || *walkGroup < 1 {
		fmt.Fprintln(os.Stderr, "usage: snapbench -ours SOCK -ref SOCK [-layers N] [-rounds N] [-walk N] [-repeat N]")
		os.Exit(2)
	}
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	var ts []*target
	for _, s := range []struct{ name, sock string }{{"ours", *ours}, {"reference", *ref}} {
		sn, conn, err := snapclient.Dial(ctx, s.sock)
		if err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: %s: %v\n", s.name, err)
			os.Exit(1)
		}
		defer conn.Close()
		ts = append(ts, &target{name: s.name, sn: sn, samples: map[string][]time.Duration{}})
	}

	// chain: Prepare + Commit, layer by layer.
	for r := 0; r < *rounds; r++ {
		for l := 0; l < *layers; l++ {
			for _, t := range order(ts, l) {
				parent := ""
				if l > 0 {
					parent = chainName(r, l-1)
				}
				t.time("Prepare (chain)", func() error {
					_, err := t.sn.Prepare(ctx, chainKey(r, l), parent)
					return err
				})
				t.time("Commit (chain)", func() error {
					return t.sn.Commit(ctx, chainName(r, l), chainKey(r, l))
				})
			}
		}
	}
	top := chainName(*rounds-1, *layers-1)
	for _, t := range ts {
		if _, err := t.sn.Prepare(ctx, "bench/container", top); err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: %s: prepare container: %v\n", t.name, err)
			os.Exit(1)
		}
	}
	for i := 0; i < *repeat; i++ {
		for _, t := range order(ts, i) {
			t.time(fmt.Sprintf("Mounts (%d lowers)", *layers), func() error {
				ms, err := t.sn.Mounts(ctx, "bench/container")
				if err == nil && len(ms) == 0 {
					err = fmt.Errorf("no mounts")
				}
				return err
			})
		}
	}
	for i := 0; i < *repeat; i++ {
		for _, t := range order(ts, i) {
			name := chainName(i%*rounds, i%*layers)
			t.time("Stat", func() error {
				info, err := t.sn.Stat(ctx, name)
				if err == nil && (info.Name != name || info.Kind != snapshots.KindCommitted) {
					err = fmt.Errorf("stat %s: got %+v", name, info)
				}
				return err
			})
		}
	}

	// walk: fill each server with walkN active snapshots, then time the filtered Walk.
	hits := 0
	for i := 0; i < *walkN; i++ {
		if i%*walkGroup == 0 {
			hits++
		}
	}
	for _, t := range ts {
		start := time.Now()
		work := make(chan int)
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					group := "miss"
					if i%*walkGroup == 0 {
						group = "hit"
					}
					labels := map[string]string{"bench/group": group, "bench/index": fmt.Sprint(i)}
					if _, err := t.sn.Prepare(ctx, fmt.Sprintf("bench/walk-%d", i), "",
						snapshots.WithLabels(labels)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		for i := 0; i < *walkN; i++ {
			select {
			case work <- i:
			case err := <-errs:
				fmt.Fprintf(os.Stderr, "snapbench: %s: fill for walk: %v\n", t.name, err)
				os.Exit(1)
			}
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errs:
			fmt.Fprintf(os.Stderr, "snapbench: %s: fill for walk: %v\n", t.name, err)
			os.Exit(1)
		default:
		}
		fmt.Fprintf(os.Stderr, "snapbench: %s: %d snapshots made in %.1f s\n", t.name, *walkN,
			time.Since(start).Seconds())
	}
	walkRepeat := *repeat / 10
	if walkRepeat < 5 {
		walkRepeat = 5
	}
	op := fmt.Sprintf("Walk (%d of %d by label)", hits, *walkN+*rounds**layers+1)
	for i := 0; i < walkRepeat; i++ {
		for _, t := range order(ts, i) {
			t.time(op, func() error {
				n := 0
				err := t.sn.Walk(ctx, func(context.Context, snapshots.Info) error {
					n++
					return nil
				}, `labels."bench/group"==hit`)
				if err == nil && n != hits {
					err = fmt.Errorf("walk found %d, want %d", n, hits)
				}
				return err
			})
		}
	}

	// remove: the container, then every chain top-down; then Cleanup.
	for _, t := range ts {
		if err := t.sn.Remove(ctx, "bench/container"); err != nil {
			fmt.Fprintf(os.Stderr, "snapbench: %s: remove container: %v\n", t.name, err)
			os.Exit(1)
		}
	}
	for r := 0; r < *rounds; r++ {
		for l := *layers - 1; l >= 0; l-- {
			for _, t := range order(ts, l) {
				name := chainName(r, l)
				t.time("Remove (chain)", func() error { return t.sn.Remove(ctx, name) })
			}
		}
	}
	for _, t := range ts {
		c, ok := t.sn.(snapshots.Cleaner)
		if !ok {
			continue
		}
		t.time("Cleanup (after chain)", func() error { return c.Cleanup(ctx) })
	}

	// The reference removes directories in Cleanup, not in Remove: compare the sums too.
	for _, t := range ts {
		var sum time.Duration
		for _, d := range t.samples["Remove (chain)"] {
			sum += d
		}
		for _, d := range t.samples["Cleanup (after chain)"] {
			sum += d
		}
		t.samples["Remove all + Cleanup (sum)"] = []time.Duration{sum}
	}

	ops := []string{"Prepare (chain)", "Commit (chain)", fmt.Sprintf("Mounts (%d lowers)", *layers),
		"Stat", op, "Remove (chain)", "Cleanup (after chain)", "Remove all + Cleanup (sum)"}
	fmt.Printf("%-28s %7s %12s %12s %8s\n", "operation", "samples", "ours", "reference", "ratio")
	out := map[string]map[string]float64{}
	worst := 0.0
	for _, o := range ops {
		a, b := ts[0].samples[o], ts[1].samples[o]
		if len(a) == 0 || len(b) == 0 {
			continue
		}
		ma, mb := median(a), median(b)
		ratio := float64(ma) / float64(mb)
		if ratio > worst {
			worst = ratio
		}
		fmt.Printf("%-28s %7d %10.3fms %10.3fms %8.2f\n", o, len(a), float64(ma)/1e6, float64(mb)/1e6, ratio)
		out[o] = map[string]float64{"ours_ms": float64(ma) / 1e6, "reference_ms": float64(mb) / 1e6, "ratio": ratio}
	}
	fmt.Printf("worst ratio ours/reference: %.2f (goal <= 1.0)\n", worst)
	if *asJSON {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
}
