// Command plait-artifacts moves a task attempt's artifacts between its container and the
// artifact store, with the presigned URLs the operator put in the attempt's Secret: it
// never holds the store's credentials, and each URL reaches one object of this attempt.
//
//	plait-artifacts init PLAN SHARED      (init container) copy this program to
//	                                      SHARED/bin, download the inputs to SHARED/in
//	plait-artifacts run PLAN -- CMD...    (the task's container) run CMD; when it exits 0,
//	                                      check the output files against their limits,
//	                                      then upload them
//
// A failure is written to the container's termination message (what Plait shows as the
// attempt's message) and the program exits 1; the command's own non-zero exit is passed on.
// Only the standard library is used, and the binary is static (CGO_ENABLED=0).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Plan is the attempt's artifacts as the operator wrote them (key plan.json of its Secret).
type Plan struct {
	Inputs        []Input  `json:"inputs"`
	Outputs       []Output `json:"outputs"`
	MaxTotalBytes int64    `json:"maxTotalBytes"`
}

// Input is one object to download before the task runs, to SHARED/in/<name>.
type Input struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// Output is one file of the task's container to upload once its command succeeded.
type Output struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	URL      string `json:"url"`
	MaxBytes int64  `json:"maxBytes"`
}

// terminationLog is where the container's termination message is read from (Kubernetes'
// default path); PLAIT_ARTIFACTS_TERMINATION_LOG moves it, for running outside a Pod.
var terminationLog = envOr("PLAIT_ARTIFACTS_TERMINATION_LOG", "/dev/termination-log")

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

var client = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 5 * time.Minute,
	},
}

func main() {
	if len(os.Args) < 3 {
		fail(2, "usage: plait-artifacts init PLAN SHARED | run PLAN -- CMD [ARGS...]")
	}
	plan, err := readPlan(os.Args[2])
	if err != nil {
		fail(1, err.Error())
	}
	switch os.Args[1] {
	case "init":
		if len(os.Args) != 4 {
			fail(2, "usage: plait-artifacts init PLAN SHARED")
		}
		if err := initShared(plan, os.Args[3]); err != nil {
			fail(1, err.Error())
		}
	case "run":
		if len(os.Args) < 5 || os.Args[3] != "--" {
			fail(2, "usage: plait-artifacts run PLAN -- CMD [ARGS...]")
		}
		code := runCommand(os.Args[4:])
		if code != 0 {
			os.Exit(code)
		}
		if err := upload(plan); err != nil {
			fail(1, err.Error())
		}
	default:
		fail(2, fmt.Sprintf("unknown action %q (init or run)", os.Args[1]))
	}
}

// fail writes why to the termination message and to stderr, and exits.
func fail(code int, message string) {
	fmt.Fprintln(os.Stderr, "plait-artifacts:", message)
	_ = os.WriteFile(terminationLog, []byte(message), 0o644)
	os.Exit(code)
}

func readPlan(path string) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("artifacts: cannot read the plan: %v", err)
	}
	var plan Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return nil, fmt.Errorf("artifacts: the plan %s is not valid: %v", path, err)
	}
	return &plan, nil
}

// initShared copies this program to SHARED/bin (for the task's container) and downloads
// every input to SHARED/in/<name>.
func initShared(plan *Plan, shared string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("artifacts: cannot find this program: %v", err)
	}
	if err := copyFile(self, filepath.Join(shared, "bin", "plait-artifacts"), 0o755); err != nil {
		return fmt.Errorf("artifacts: cannot copy this program: %v", err)
	}
	for _, in := range plan.Inputs {
		target := filepath.Join(shared, "in", in.Name)
		n, err := download(in.URL, target)
		if err != nil {
			return fmt.Errorf("input artifact %q: %v", in.Name, err)
		}
		fmt.Fprintf(os.Stderr, "plait-artifacts: input %q: %d bytes\n", in.Name, n)
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func download(url, target string) (int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, fmt.Errorf("download failed: %v", redact(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("the artifact store answered %s%s", resp.Status, excerpt(resp.Body))
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return 0, err
	}
	tmp := target + ".part"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("download failed after %d bytes: %v", n, redact(err))
	}
	return n, os.Rename(tmp, target)
}

// runCommand runs the task's command with this process's streams and environment,
// passing SIGTERM and SIGINT on (this program is the container's PID 1); it returns the
// command's exit code (128+signal when a signal ended it).
func runCommand(argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fail(127, fmt.Sprintf("cannot run %q: %v", argv[0], err))
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range signals {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	signal.Stop(signals)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			return 128 + int(status.Signal())
		}
		return exit.ExitCode()
	}
	if err != nil {
		fail(1, fmt.Sprintf("running %q failed: %v", argv[0], err))
	}
	return 0
}

// upload checks every output file first (present, a regular file, within its own limit
// and, all together, within the attempt's), then uploads them one by one: nothing is
// uploaded when any is missing or too large.
func upload(plan *Plan) error {
	var total int64
	sizes := make([]int64, len(plan.Outputs))
	for i, out := range plan.Outputs {
		info, err := os.Stat(out.Path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("output artifact %q: %s does not exist", out.Name, out.Path)
			}
			return fmt.Errorf("output artifact %q: %v", out.Name, err)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("output artifact %q: %s is not a regular file", out.Name, out.Path)
		}
		if out.MaxBytes > 0 && info.Size() > out.MaxBytes {
			return fmt.Errorf("output artifact %q: %s is %d bytes, over its limit of %d bytes",
				out.Name, out.Path, info.Size(), out.MaxBytes)
		}
		sizes[i] = info.Size()
		total += info.Size()
	}
	if plan.MaxTotalBytes > 0 && total > plan.MaxTotalBytes {
		return fmt.Errorf("output artifacts: %d bytes in all, over the limit of %d bytes per attempt",
			total, plan.MaxTotalBytes)
	}
	for i, out := range plan.Outputs {
		if err := put(out, sizes[i]); err != nil {
			return fmt.Errorf("output artifact %q: %v", out.Name, err)
		}
		fmt.Fprintf(os.Stderr, "plait-artifacts: output %q: %d bytes\n", out.Name, sizes[i])
	}
	return nil
}

func put(out Output, size int64) error {
	file, err := os.Open(out.Path)
	if err != nil {
		return err
	}
	defer file.Close()
	req, err := http.NewRequest(http.MethodPut, out.URL, file)
	if err != nil {
		return fmt.Errorf("bad upload URL: %v", redact(err))
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("upload failed: %v", redact(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the artifact store answered %s%s", resp.Status, excerpt(resp.Body))
	}
	return nil
}

// redact drops a URL's query (its signature) from an error's text.
func redact(err error) string {
	var urlErr interface{ Unwrap() error }
	text := err.Error()
	if errors.As(err, &urlErr) {
		if i := strings.Index(text, "?"); i >= 0 {
			if j := strings.Index(text[i:], "\": "); j >= 0 {
				return text[:i] + text[i+j:]
			}
			if j := strings.Index(text[i:], ": "); j >= 0 {
				return text[:i] + text[i+j:]
			}
		}
	}
	return text
}

// excerpt is the start of an error response (S3 explains itself in a short XML body).
func excerpt(body io.Reader) string {
	data, _ := io.ReadAll(io.LimitReader(body, 512))
	text := strings.Join(strings.Fields(string(data)), " ")
	if text == "" {
		return ""
	}
	return ": " + text
}
