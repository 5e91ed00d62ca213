// Command loadgen is the router benchmark's load generator: closed-loop HTTP/1.1 clients,
// one keep-alive connection each, that POST one body over and over and time every answer.
//
// It is native so that on a small machine the client costs far less CPU than the servers it
// measures; a Python client shares their cores and caches and inflates what it measures.
// After the warm-up it prints "ready" and waits for a line on stdin, so the caller can read
// the server's CPU time around the measured requests only. Then it prints one JSON object:
// {"latencies": [s...], "first_events": [s...], "errors": n, "wall": s}.
// first_events (streams only) is the time until the first bytes of the body.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	Latencies   []float64 `json:"latencies"`
	FirstEvents []float64 `json:"first_events"`
	Errors      int       `json:"errors"`
	Wall        float64   `json:"wall"`
}

func main() {
	url := flag.String("url", "", "where to POST")
	body := flag.String("body", "", "request body (JSON)")
	concurrency := flag.Int("c", 1, "clients, each on its own connection")
	requests := flag.Int("n", 100, "measured requests per client")
	warmup := flag.Int("warmup", 2, "unmeasured requests per client first")
	stream := flag.Bool("stream", false, "the answer is a stream: also time its first bytes")
	var extra headers
	flag.Var(&extra, "H", "extra header 'Name: value' (repeatable)")
	flag.Parse()

	client := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: *concurrency,
			MaxConnsPerHost:     *concurrency,
			DisableCompression:  true,
		},
	}
	send := func() (float64, float64, error) {
		req, err := http.NewRequest("POST", *url, bytes.NewBufferString(*body))
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		for _, h := range extra {
			name, value, _ := strings.Cut(h, ":")
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
		started := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		first := 0.0
		if *stream {
			buf := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				return 0, 0, err
			}
			first = time.Since(started).Seconds()
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return time.Since(started).Seconds(), first, nil
	}

	var mu sync.Mutex
	out := result{Latencies: []float64{}, FirstEvents: []float64{}}
	run := func(count int, measure bool) {
		var wg sync.WaitGroup
		for i := 0; i < *concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < count; j++ {
					latency, first, err := send()
					if !measure {
						continue
					}
					mu.Lock()
					if err != nil {
						out.Errors++
					} else {
						out.Latencies = append(out.Latencies, latency)
						if *stream {
							out.FirstEvents = append(out.FirstEvents, first)
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}

	run(*warmup, false)
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: no go-ahead on stdin:", err)
		os.Exit(2)
	}
	started := time.Now()
	run(*requests, true)
	out.Wall = time.Since(started).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
