// Command pause is the sandbox process of every pod on the local cluster's real node: it
// holds the pod's namespaces, reaps the zombies of a shared PID namespace, and exits on
// SIGINT or SIGTERM. It is built statically (CGO_ENABLED=0) and packed as the pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
