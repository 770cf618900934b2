// wsload holds many WebSocket clients of FinStream's per-symbol streams and
// reports what they received: messages, gaps in each channel's seq numbers,
// clients closed as too slow (4008), and event time -> receive latency.
//
// bench/websocket_fanout.py builds and drives it: a Python client cannot read
// ~1M messages a second on this machine's cores, a Go one can. It prints
// "ready <open> <refused>" once every client has connected, reads until it is
// sent "stop <second>" on standard input, and prints one JSON summary line
// (latency percentiles overall, and from that second after ready on).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
)

type summary struct {
	Open     int     `json:"open"`
	Refused  int     `json:"refused"`
	Messages int64   `json:"messages"`
	Gaps     int64   `json:"gaps"`
	Dropped  int     `json:"dropped"`
	Closed   int     `json:"closed"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// The same over what was received from the second given with "stop" on (after a warm-up).
	SteadyP50Ms float64 `json:"steady_p50_ms"`
	SteadyP99Ms float64 `json:"steady_p99_ms"`
	SteadyMaxMs float64 `json:"steady_max_ms"`
	// Per second of receive time since "ready": messages, p50 and p99 (ms).
	Seconds map[int32][3]float64 `json:"seconds"`
}

type client struct {
	conn      *websocket.Conn
	messages  int64
	gaps      int64
	dropped   bool
	closed    bool
	latencyUs []int32
	second    []int32 // of each latency: when it was received, in seconds since ready
}

var (
	stopping atomic.Bool
	readyAt  time.Time
	seqKey   = []byte(`"seq":`)
	tsKey    = []byte(`"ts":"`)
)

// read takes messages until the connection closes. The envelope's seq is the
// message's first "seq" (the event's own comes later, inside "data").
func (c *client) read() {
	var last int64 = -1
	var buffer bytes.Buffer // reused: a message allocates nothing
	for {
		_, reader, err := c.conn.NextReader()
		if err == nil {
			buffer.Reset()
			_, err = buffer.ReadFrom(reader)
		}
		received := time.Now()
		if err != nil {
			if !stopping.Load() { // closed by the server, not by us
				c.closed = true
				closeErr, ok := err.(*websocket.CloseError)
				c.dropped = ok && closeErr.Code == 4008
			}
			return
		}
		message := buffer.Bytes()
		c.messages++
		if at := bytes.Index(message, seqKey); at >= 0 {
			rest := message[at+len(seqKey):]
			if seq, ok := leadingInt(rest); ok {
				if last >= 0 && seq != last+1 {
					c.gaps++
				}
				last = seq
			}
		}
		if at := bytes.Index(message, tsKey); at >= 0 {
			rest := message[at+len(tsKey):]
			end := bytes.IndexByte(rest, '"')
			if end > 0 {
				if ts, err := time.Parse(time.RFC3339Nano, unsafeString(rest[:end])); err == nil {
					c.latencyUs = append(c.latencyUs, int32(min(received.Sub(ts).Microseconds(), 1<<31-1)))
					c.second = append(c.second, int32(received.Sub(readyAt)/time.Second))
				}
			}
		}
	}
}

func leadingInt(text []byte) (int64, bool) {
	var value int64
	digits := 0
	for _, char := range text {
		if char < '0' || char > '9' {
			break
		}
		value = value*10 + int64(char-'0')
		digits++
	}
	return value, digits > 0
}

// unsafeString views bytes as a string without copying; the string must not outlive the buffer.
func unsafeString(text []byte) string {
	return unsafe.String(unsafe.SliceData(text), len(text))
}

func main() {
	bases := flag.String("url", "ws://127.0.0.1:8000", "servers, comma-separated: client i connects to server i mod len")
	path := flag.String("path", "/ws/trades/%s", "per-symbol path")
	symbols := flag.String("symbols", "AAPL", "comma-separated; client i follows symbol i mod len")
	clients := flag.Int("clients", 100, "connections")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the reading phase to this file")
	flag.Parse()

	tickers := strings.Split(*symbols, ",")
	servers := strings.Split(*bases, ",")
	dialer := websocket.Dialer{HandshakeTimeout: 60 * time.Second, ReadBufferSize: 64 << 10}
	all := make([]*client, *clients)
	var wg sync.WaitGroup
	var mu sync.Mutex
	open, refused := 0, 0
	var connected sync.WaitGroup
	for i := range all {
		all[i] = &client{}
		connected.Add(1)
		wg.Add(1)
		go func(c *client, base, symbol string) {
			defer wg.Done()
			header := http.Header{"Origin": {strings.Replace(base, "ws://", "http://", 1)}}
			conn, _, err := dialer.Dial(base+fmt.Sprintf(*path, symbol), header)
			mu.Lock()
			if err != nil {
				refused++
			} else {
				open++
			}
			mu.Unlock()
			c.conn = conn
			connected.Done()
			if err == nil {
				c.read()
			}
		}(all[i], servers[i%len(servers)], tickers[i%len(tickers)])
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // do not stampede the accept queue
		}
	}
	connected.Wait()
	readyAt = time.Now()
	if *cpuProfile != "" {
		out, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(out) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	fmt.Printf("ready %d %d\n", open, refused)
	// Read until told to stop ("stop <steady from second>" on standard input), then report what was received.
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	var steadyFrom int32
	fmt.Sscanf(line, "stop %d", &steadyFrom)
	stopping.Store(true)
	for _, c := range all {
		if c.conn != nil {
			c.conn.Close()
		}
	}
	wg.Wait()
	result := summary{Open: open, Refused: refused}
	var latencies, steady []int32
	perSecond := map[int32][]int32{}
	for _, c := range all {
		for i, second := range c.second {
			perSecond[second] = append(perSecond[second], c.latencyUs[i])
			if second >= steadyFrom {
				steady = append(steady, c.latencyUs[i])
			}
		}
		result.Messages += c.messages
		result.Gaps += c.gaps
		if c.dropped {
			result.Dropped++
		}
		if c.closed {
			result.Closed++
		}
		latencies = append(latencies, c.latencyUs...)
	}
	result.P50Ms, result.P99Ms, result.MaxMs = percentiles(latencies)
	result.SteadyP50Ms, result.SteadyP99Ms, result.SteadyMaxMs = percentiles(steady)
	result.Seconds = map[int32][3]float64{}
	for second, values := range perSecond {
		p50, p99, _ := percentiles(values)
		result.Seconds[second] = [3]float64{float64(len(values)), p50, p99}
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

// percentiles sorts latencies (µs) and returns their p50, p99 and max in milliseconds.
func percentiles(latencies []int32) (float64, float64, float64) {
	n := len(latencies)
	if n == 0 {
		return 0, 0, 0
	}
	slices.Sort(latencies)
	return float64(latencies[n/2]) / 1000, float64(latencies[n*99/100]) / 1000, float64(latencies[n-1]) / 1000
}
