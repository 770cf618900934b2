// wsload holds many WebSocket clients of FinStream's per-symbol streams and
// reports what they received: messages, gaps in each channel's seq numbers,
// clients closed as too slow (4008), and event time -> receipt latency, to the
// bytes' arrival in the socket and to their read (conn.go: timedReader).
//
// bench/websocket_fanout.py builds and drives it: a Python client cannot read
// ~1M messages a second on this machine's cores, a Go one can (conn.go: why
// not with a WebSocket library). It prints
// "ready <open> <refused>" once every client has connected, reads until it is
// sent "stop <second>" on standard input, and prints one JSON summary line
// (latency percentiles overall, and from that second after ready on, to
// arrival and to read); "count"
// prints how many messages have been received so far.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latency is event time -> receipt, in ms, over every message and over those that arrived from the
// second given with "stop" on (after a warm-up): the same messages for both receipts.
type latency struct {
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	SteadyP50Ms float64 `json:"steady_p50_ms"`
	SteadyP99Ms float64 `json:"steady_p99_ms"`
	SteadyMaxMs float64 `json:"steady_max_ms"`
}

type summary struct {
	Open     int   `json:"open"`
	Refused  int   `json:"refused"`
	Messages int64 `json:"messages"`
	Gaps     int64 `json:"gaps"`
	Dropped  int   `json:"dropped"`
	Closed   int   `json:"closed"`
	// Messages whose arrival is their read time, for want of a kernel timestamp (see timedReader).
	Unstamped int64 `json:"unstamped"`
	// Receipt as the bytes' arrival in the client's socket (kernel timestamp), and as their read by this
	// process (see timedReader).
	Arrival latency `json:"arrival"`
	Read    latency `json:"read"`
	// Per second of arrival since "ready": messages, then p50 and p99 (ms) on arrival and on read.
	Seconds map[int32][5]float64 `json:"seconds"`
}

type client struct {
	conn      net.Conn
	messages  int64
	gaps      int64
	lastSeq   int64
	dropped   bool
	closed    bool
	unstamped int64   // messages whose read had no kernel timestamp: their read time stands in for arrival
	arrivalUs []int32 // event time -> arrival, per message
	readUs    []int32 // event time -> read, per message
	second    []int32 // of each message: when it arrived, in seconds since ready
	layout    layout
	clock     eventClock
}

// layout is where the last message had its seq and its event time. A channel's
// messages share their layout, so the next one is looked for there first and
// searched for only when it is not: the clients stand in for other machines,
// and the fewer cycles they take from the server, the less they skew it.
type layout struct {
	seqPrefix []byte // the envelope up to its seq: `{"type":"trade","channel":"trades.AAPL","seq":`
	tsAt      int    // where `"ts":"` began, counted from the end of seqPrefix (so it moves when the seq gains a digit)
}

// eventClock reads event times, remembering the last whole second read: a
// channel's events come in time order, so most share it with the one before
// and only their fraction needs reading.
type eventClock struct {
	second  [19]byte // "YYYY-MM-DDTHH:MM:SS"
	seconds int64    // since the epoch
	known   bool
}

func (k *eventClock) micros(text []byte) (int64, bool) {
	n := len(text)
	if k.known && n >= 20 && n <= 30 && text[n-1] == 'Z' && string(text[:19]) == string(k.second[:]) {
		if fraction, ok := fractionMicros(text[19 : n-1]); ok {
			return k.seconds*1_000_000 + fraction, true
		}
	}
	if !fastForm(text) {
		return unixMicros(text)
	}
	copy(k.second[:], text[:19])
	k.seconds, k.known = fastSeconds(text), true
	return fastMicros(text, k.seconds), true
}

var (
	stopping atomic.Bool
	readyAt  time.Time
	seqKey   = []byte(`"seq":`)
	tsKey    = []byte(`"ts":"`)
)

// read takes messages until the connection closes.
func (c *client) read(pending []byte) {
	c.lastSeq = -1
	var arrivedUs, readUs int64
	var lastReadAt time.Time
	var second int32
	stamped := true
	code, err := readMessages(c.conn, pending, func(message []byte, arrivedAt, readAt time.Time) {
		if !readAt.Equal(lastReadAt) { // once per read from the socket
			lastReadAt, stamped = readAt, !arrivedAt.IsZero()
			if !stamped {
				arrivedAt = readAt
			}
			arrivedUs, readUs, second = arrivedAt.UnixMicro(), readAt.UnixMicro(), int32(arrivedAt.Sub(readyAt)/time.Second)
		}
		if !stamped {
			c.unstamped++
		}
		c.count(message, arrivedUs, readUs, second)
	})
	c.conn.Close()
	if !stopping.Load() && (err != nil || code != 0) { // closed by the server, not by us
		c.closed = true
		c.dropped = code == 4008
	}
}

// count takes one message: its envelope's seq (the message's first "seq"; the
// event's own comes later, inside "data") and its event time.
func (c *client) count(message []byte, arrivedUs, readUs int64, second int32) {
	atomic.AddInt64(&c.messages, 1) // read by "count" meanwhile
	rest, found := c.afterSeqKey(message)
	if !found {
		return
	}
	seq, ok := leadingInt(rest)
	if !ok {
		return
	}
	if c.lastSeq >= 0 && seq != c.lastSeq+1 {
		c.gaps++
	}
	c.lastSeq = seq
	at := c.layout.tsAt
	if at < 0 || at > len(rest)-len(tsKey) || string(rest[at:at+len(tsKey)]) != string(tsKey) {
		if at = bytes.Index(rest, tsKey); at < 0 {
			return
		}
		c.layout.tsAt = at
	}
	rest = rest[at+len(tsKey):]
	if end := bytes.IndexByte(rest, '"'); end > 0 {
		if ts, ok := c.clock.micros(rest[:end]); ok {
			c.arrivalUs = append(c.arrivalUs, micros32(arrivedUs-ts))
			c.readUs = append(c.readUs, micros32(readUs-ts))
			c.second = append(c.second, second)
		}
	}
}

// afterSeqKey is the message after its first `"seq":`.
func (c *client) afterSeqKey(message []byte) ([]byte, bool) {
	if prefix := c.layout.seqPrefix; len(prefix) > 0 && bytes.HasPrefix(message, prefix) {
		return message[len(prefix):], true
	}
	at := bytes.Index(message, seqKey)
	if at < 0 {
		return nil, false
	}
	end := at + len(seqKey)
	c.layout = layout{seqPrefix: append([]byte(nil), message[:end]...), tsAt: -1}
	return message[end:], true
}

// micros32 is a latency in µs as stored: within int32 (±35 minutes), clamped beyond.
func micros32(us int64) int32 {
	return int32(max(min(us, math.MaxInt32), math.MinInt32))
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

// unixMicros reads the event times FinStream writes, RFC 3339 in UTC
// ("2026-11-26T08:33:19.957773Z"); anything else goes through time.Parse.
func unixMicros(text []byte) (int64, bool) {
	if !fastForm(text) {
		ts, err := time.Parse(time.RFC3339Nano, string(text))
		return ts.UnixMicro(), err == nil
	}
	return fastMicros(text, fastSeconds(text)), true
}

// fastMicros: a time in fastForm whose whole seconds are `seconds`, in µs since the epoch.
func fastMicros(text []byte, seconds int64) int64 {
	fraction, _ := fractionMicros(text[19 : len(text)-1]) // fastForm checked it
	return seconds*1_000_000 + fraction
}

// fastSeconds: the whole seconds since the epoch of a time in fastForm.
func fastSeconds(text []byte) int64 {
	number := func(from, to int) int64 { // digits: fastForm checked them
		value, _ := leadingInt(text[from:to])
		return value
	}
	days := daysFromCivil(number(0, 4), number(5, 7), number(8, 10))
	return days*86400 + number(11, 13)*3600 + number(14, 16)*60 + number(17, 19)
}

// fractionMicros reads a fraction of a second as fastForm has it: nothing, or
// "." and 1-9 digits (µs: digits past the sixth are dropped, as time.Parse's UnixMicro does).
func fractionMicros(fraction []byte) (int64, bool) {
	if len(fraction) == 0 {
		return 0, true
	}
	if fraction[0] != '.' || len(fraction) < 2 || len(fraction) > 10 {
		return 0, false
	}
	micros := int64(0)
	for i := 1; i <= 6; i++ {
		micros *= 10
		if i < len(fraction) {
			digit := fraction[i]
			if digit < '0' || digit > '9' {
				return 0, false
			}
			micros += int64(digit - '0')
		}
	}
	for _, digit := range fraction[min(7, len(fraction)):] {
		if digit < '0' || digit > '9' {
			return 0, false
		}
	}
	return micros, true
}

// fastForm: "YYYY-MM-DDTHH:MM:SS" then "Z", or "." and 1-9 digits then "Z".
func fastForm(text []byte) bool {
	n := len(text)
	if n < 20 || text[n-1] != 'Z' || (n > 20 && (text[19] != '.' || n == 21 || n > 30)) {
		return false
	}
	for i, char := range text[:n-1] {
		switch i {
		case 4, 7:
			if char != '-' {
				return false
			}
		case 10:
			if char != 'T' {
				return false
			}
		case 13, 16:
			if char != ':' {
				return false
			}
		case 19:
		default:
			if char < '0' || char > '9' {
				return false
			}
		}
	}
	return true
}

// daysFromCivil is the number of days from 1970-01-01 to a proleptic Gregorian date.
func daysFromCivil(year, month, day int64) int64 {
	if month <= 2 {
		year--
	}
	era := year / 400
	yearOfEra := year - era*400
	monthIndex := (month + 9) % 12
	dayOfYear := (153*monthIndex+2)/5 + day - 1
	dayOfEra := yearOfEra*365 + yearOfEra/4 - yearOfEra/100 + dayOfYear
	return era*146097 + dayOfEra - 719468
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
			conn, pending, err := dial(base+fmt.Sprintf(*path, symbol), 60*time.Second)
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
				c.read(pending)
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
	// Read until told to stop ("stop <steady from second>" on standard input), then report what was
	// received. "count" prints the messages received so far.
	commands := bufio.NewReader(os.Stdin)
	var steadyFrom int32
	for {
		line, err := commands.ReadString('\n')
		if strings.TrimSpace(line) == "count" {
			total := int64(0)
			for _, c := range all {
				total += atomic.LoadInt64(&c.messages)
			}
			fmt.Println(total)
			continue
		}
		if _, scanned := fmt.Sscanf(line, "stop %d", &steadyFrom); scanned == nil || err != nil {
			break
		}
	}
	stopping.Store(true)
	for _, c := range all {
		if c.conn != nil {
			c.conn.Close()
		}
	}
	wg.Wait()
	result := summary{Open: open, Refused: refused, Seconds: map[int32][5]float64{}}
	var arrival, read samples
	type secondLatencies struct{ arrival, read []int32 }
	perSecond := map[int32]*secondLatencies{}
	for _, c := range all {
		arrival.all = append(arrival.all, c.arrivalUs...)
		read.all = append(read.all, c.readUs...)
		for i, second := range c.second {
			if second >= steadyFrom {
				arrival.steady = append(arrival.steady, c.arrivalUs[i])
				read.steady = append(read.steady, c.readUs[i])
			}
			if perSecond[second] == nil {
				perSecond[second] = &secondLatencies{}
			}
			perSecond[second].arrival = append(perSecond[second].arrival, c.arrivalUs[i])
			perSecond[second].read = append(perSecond[second].read, c.readUs[i])
		}
		result.Messages += c.messages
		result.Gaps += c.gaps
		result.Unstamped += c.unstamped
		if c.dropped {
			result.Dropped++
		}
		if c.closed {
			result.Closed++
		}
	}
	result.Arrival, result.Read = arrival.latency(), read.latency()
	for second, values := range perSecond {
		arrivalP50, arrivalP99, _ := percentiles(values.arrival)
		readP50, readP99, _ := percentiles(values.read)
		result.Seconds[second] = [5]float64{float64(len(values.arrival)), arrivalP50, arrivalP99, readP50, readP99}
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

// samples gathers latencies (µs): all of them, and those from the steady-state second on.
type samples struct {
	all, steady []int32
}

func (s *samples) latency() latency {
	var l latency
	l.P50Ms, l.P99Ms, l.MaxMs = percentiles(s.all)
	l.SteadyP50Ms, l.SteadyP99Ms, l.SteadyMaxMs = percentiles(s.steady)
	return l
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
