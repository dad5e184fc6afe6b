// SPDX-License-Identifier: Apache-2.0

// cripull calls containerd's CRI image service the way the kubelet does, for the tests of the
// snapshotter's lazy path:
//
//	cripull -a SOCK [-api v1|v1alpha2] [-timeout 120s] pull REF
//	cripull -a SOCK [-api v1|v1alpha2] remove REF
//	cripull -a SOCK [-api v1|v1alpha2] status REF
//
// Prints one JSON object on stdout: {"image_ref": ...} for pull, {"present": bool, "id": ...}
// for status, {} for remove. A failed RPC prints {"error": MESSAGE, "code": CODE} and exits 3;
// bad usage exits 2.
//
// Debian ships no Go package of the CRI API (k8s.io/cri-api), so the few messages used here
// are encoded by hand with protowire, field numbers as in the CRI API's api.proto:
// PullImageRequest{image: ImageSpec = 1}, ImageSpec{image: string = 1},
// PullImageResponse{image_ref: string = 1}, RemoveImageRequest{image: ImageSpec = 1},
// ImageStatusRequest{image: ImageSpec = 1}, ImageStatusResponse{image: Image = 1},
// Image{id: string = 1}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends and receives already-encoded protobuf messages ([]byte).
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// imageSpecRequest encodes a request whose field 1 is ImageSpec{image: ref}.
func imageSpecRequest(ref string) []byte {
	spec := protowire.AppendTag(nil, 1, protowire.BytesType)
	spec = protowire.AppendString(spec, ref)
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(req, spec)
}

// field returns the bytes of the first length-delimited field num of msg (nil if absent).
func field(msg []byte, num protowire.Number) ([]byte, error) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			return v, nil
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return nil, nil
}

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func main() {
	addr := flag.String("a", "", "containerd's socket")
	api := flag.String("api", "v1", "CRI API version: v1 or v1alpha2")
	timeout := flag.Duration("timeout", 120*time.Second, "deadline of the call")
	flag.Parse()
	if *addr == "" || flag.NArg() != 2 || (*api != "v1" && *api != "v1alpha2") {
		fmt.Fprintln(os.Stderr, "usage: cripull -a SOCK [-api v1|v1alpha2] pull|remove|status REF")
		os.Exit(2)
	}
	verb, ref := flag.Arg(0), flag.Arg(1)
	methods := map[string]string{"pull": "PullImage", "remove": "RemoveImage", "status": "ImageStatus"}
	method, ok := methods[verb]
	if !ok {
		fmt.Fprintf(os.Stderr, "cripull: unknown command %q\n", verb)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dialer := func(ctx context.Context, a string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", a)
	}
	conn, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer), grpc.FailOnNonTempDialError(true))
	if err != nil {
		emit(map[string]string{"error": fmt.Sprintf("dial %s: %v", *addr, err), "code": "Unavailable"})
		os.Exit(3)
	}
	defer conn.Close()
	req := imageSpecRequest(ref)
	var resp []byte
	full := fmt.Sprintf("/runtime.%s.ImageService/%s", *api, method)
	if err := conn.Invoke(ctx, full, &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		st, _ := status.FromError(err)
		emit(map[string]string{"error": st.Message(), "code": st.Code().String()})
		os.Exit(3)
	}
	switch verb {
	case "pull":
		v, err := field(resp, 1)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cripull: bad PullImageResponse: %v\n", err)
			os.Exit(1)
		}
		emit(map[string]string{"image_ref": string(v)})
	case "status":
		img, err := field(resp, 1)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cripull: bad ImageStatusResponse: %v\n", err)
			os.Exit(1)
		}
		id, err := field(img, 1)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cripull: bad Image: %v\n", err)
			os.Exit(1)
		}
		emit(map[string]interface{}{"present": img != nil, "id": string(id)})
	default:
		emit(map[string]string{})
	}
}
