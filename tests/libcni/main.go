// knet-libcni runs one CNI operation on a network configuration list
// through libcni, the library containerd and CRI-O call plugins with: ADD
// with AddNetworkList, CHECK with CheckNetworkList, DEL with DelNetworkList.
// Results are cached in -cache-dir (never the host's /var/lib/cni), and CHECK
// and DEL hand the plugins libcni's cached result as prevResult, exactly as a
// runtime does.
//
// Run it in the node's network namespace (the plugins create their links
// there). On success it prints ADD's result (nothing for CHECK and DEL) and
// exits 0. On failure it prints {"code": N, "msg": "..."} on stdout, N the
// CNI error code of the plugin that failed (0 if the error is libcni's
// own), msg libcni's full error text, and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	conflist := flag.String("conflist", "", "the network configuration list file")
	cacheDir := flag.String("cache-dir", "", "libcni's cache directory")
	netns := flag.String("netns", "", "the pod's network namespace path (CNI_NETNS); may be empty for DEL")
	containerID := flag.String("container-id", "", "CNI_CONTAINERID")
	ifname := flag.String("ifname", "eth0", "CNI_IFNAME")
	path := flag.String("path", "", "CNI_PATH: plugin directories separated by ':'")
	timeout := flag.Duration("timeout", 60*time.Second, "how long the whole operation may take")
	flag.Parse()
	if flag.NArg() != 1 || *conflist == "" || *cacheDir == "" || *containerID == "" || *path == "" {
		fmt.Fprintln(os.Stderr, "usage: knet-libcni -conflist FILE -cache-dir DIR -container-id ID -path DIRS [-netns PATH] [-ifname IF] ADD|CHECK|DEL")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *conflist, *cacheDir, *netns, *containerID, *ifname, *path, *timeout); err != nil {
		code := uint(0)
		var cniErr *types.Error
		if errors.As(err, &cniErr) {
			code = cniErr.Code
		}
		out, _ := json.Marshal(map[string]interface{}{"code": code, "msg": err.Error()})
		fmt.Println(string(out))
		os.Exit(1)
	}
}

func run(command, conflist, cacheDir, netns, containerID, ifname, path string, timeout time.Duration) error {
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(path, ":"), cacheDir, nil)
	// The arguments containerd's CRI passes for a pod sandbox.
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netns,
		IfName:      ifname,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", containerID},
			{"K8S_POD_INFRA_CONTAINER_ID", containerID},
		},
		CapabilityArgs: map[string]interface{}{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	switch command {
	case "ADD":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return result.Print()
	case "CHECK":
		return cni.CheckNetworkList(ctx, list, rt)
	case "DEL":
		return cni.DelNetworkList(ctx, list, rt)
	default:
		return fmt.Errorf("unknown command %q (ADD, CHECK or DEL)", command)
	}
}
