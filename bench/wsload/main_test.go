package main

import (
	"io"
	"math/rand"
	"net"
	"testing"
	"time"
)

func TestUnixMicrosAgreesWithTimeParse(t *testing.T) {
	random := rand.New(rand.NewSource(1))
	layouts := []string{"2006-01-02T15:04:05.000000Z", "2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05Z",
		"2006-01-02T15:04:05.999999999Z", time.RFC3339Nano}
	for i := 0; i < 100_000; i++ {
		at := time.Unix(random.Int63n(1<<34)-1<<32, random.Int63n(1e9)).UTC()
		layout := layouts[i%len(layouts)]
		text := at.Format(layout)
		if layout == time.RFC3339Nano {
			text = at.In(time.FixedZone("", -5*3600)).Format(layout)
		}
		want, err := time.Parse(time.RFC3339Nano, text)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := unixMicros([]byte(text))
		if !ok || got != want.UnixMicro() {
			t.Fatalf("%s: %d, want %d", text, got, want.UnixMicro())
		}
	}
}

func TestFramesAreParsedOnlyWhenWhole(t *testing.T) {
	payload := make([]byte, 300)
	data := append([]byte{0x81, 126, 1, 44}, payload...)
	for cut := 0; cut < len(data); cut++ {
		if _, ok, err := nextFrame(data[:cut]); ok || err != nil {
			t.Fatalf("parsed a frame from %d of %d bytes", cut, len(data))
		}
	}
	f, ok, err := nextFrame(data)
	if !ok || err != nil || f.size != len(data) || len(f.payload) != 300 || !f.fin || f.opcode != opText {
		t.Fatalf("%+v %v %v", f, ok, err)
	}
	if _, _, err := nextFrame([]byte{0x81, 0x85, 0, 0, 0, 0, 1}); err == nil {
		t.Fatal("a masked frame from the server was taken")
	}
}

func TestUnixMicrosRefusesWhatTimeParseRefuses(t *testing.T) {
	for _, text := range []string{"2026-11-26T08:33:19.Z", "2026-1a-26T08:33:19Z", "2026-11-26 08:33:19Z",
		"2026-11-26T08:33:19", ""} {
		if _, ok := unixMicros([]byte(text)); ok {
			t.Errorf("%q was taken for a time", text)
		}
	}
}

func TestReadsTellWhenTheirBytesArrivedNotWhenTheyWereRead(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, _ := listener.Accept()
		accepted <- conn
	}()
	client, err := net.Dial("tcp", listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
	reader := newTimedReader(client)
	if reader.raw == nil {
		t.Fatal("no kernel timestamps on a TCP connection")
	}

	// The kernel turns receive stamping on for the whole host a moment after the first socket asks
	// (a deferred switch), and segments that arrive before then carry no stamp: such reads come back
	// unstamped, and the next ones stamped.
	buffer := make([]byte, 64)
	for attempt := 0; ; attempt++ {
		beforeWrite := time.Now()
		server.Write([]byte("frames"))
		time.Sleep(20 * time.Millisecond) // the bytes wait in the socket, as for a client not yet scheduled
		beforeRead := time.Now()
		n, arrived, read, err := reader.read(buffer)

		if err != nil || string(buffer[:n]) != "frames" {
			t.Fatalf("%q %v", buffer[:n], err)
		}
		if arrived.IsZero() {
			if attempt == 100 {
				t.Fatal("no read came with a kernel timestamp")
			}
			continue
		}
		if arrived.Before(beforeWrite) || !arrived.Before(beforeRead) || read.Before(beforeRead) {
			t.Fatalf("wrote at %v, read from %v: arrived %v, read %v", beforeWrite, beforeRead, arrived, read)
		}
		t.Logf("stamped from read %d on", attempt+1)
		break
	}
	server.Close()
	if _, _, _, err := reader.read(buffer); err != io.EOF {
		t.Fatalf("after the peer closed: %v", err)
	}
}

func TestMessagesWithoutAKernelStampAreCountedAndTakeTheirReadTime(t *testing.T) {
	server, conn := net.Pipe() // no socket, so no kernel timestamps
	c := &client{conn: conn}
	done := make(chan struct{})
	go func() {
		c.read(nil)
		close(done)
	}()
	payload := []byte(`{"type":"trade","channel":"trades.AAPL","seq":1,"data":{"ts":"` +
		time.Now().UTC().Format("2006-01-02T15:04:05.000000Z") + `"}}`)
	server.Write(append([]byte{0x81, byte(len(payload))}, payload...))
	server.Close()
	<-done

	if c.messages != 1 || c.unstamped != 1 || len(c.arrivalUs) != 1 || c.arrivalUs[0] != c.readUs[0] {
		t.Fatalf("messages %d, unstamped %d, arrival %v, read %v", c.messages, c.unstamped, c.arrivalUs, c.readUs)
	}
}

func TestTheEventClockAgreesWithUnixMicrosWhateverTheOrderOfTimes(t *testing.T) {
	random := rand.New(rand.NewSource(2))
	layouts := []string{"2006-01-02T15:04:05.000000Z", "2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05Z",
		"2006-01-02T15:04:05.999999999Z"}
	var clock eventClock
	at := time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)
	for i := 0; i < 100_000; i++ {
		at = at.Add(time.Duration(random.Int63n(int64(300 * time.Millisecond))))
		if random.Intn(50) == 0 { // now and then out of order, or years away
			at = at.Add(-time.Duration(random.Int63n(int64(1000 * time.Hour))))
		}
		texts := []string{at.Format(layouts[i%len(layouts)])}
		if i%97 == 0 { // not a time, sharing the remembered second: refused, and the clock goes on
			second := texts[0][:19]
			texts = append(texts, second+".Z", second+".12a4Z", second+".1234567890Z", second+"Z ")
		}
		for _, text := range texts {
			want, wantOk := unixMicros([]byte(text))
			got, ok := clock.micros([]byte(text))
			if ok != wantOk || got != want {
				t.Fatalf("%q: %d %v, want %d %v", text, got, ok, want, wantOk)
			}
		}
	}
}

func TestSeqsAndEventTimesAreFoundWhereverTheMessageLayoutMoves(t *testing.T) {
	c := &client{lastSeq: -1}
	base := time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)
	messages := []struct {
		text  string
		delay time.Duration
	}{
		{`{"type":"trade","channel":"trades.AAPL","seq":1,"data":{"id":"t-9","ts":"2026-11-26T12:59:59.990000Z"}}`, 10 * time.Millisecond},
		{`{"type":"trade","channel":"trades.AAPL","seq":2,"data":{"id":"t-10","ts":"2026-11-26T12:59:59.995000Z"}}`, 5 * time.Millisecond},
		{`{"type":"trade","channel":"trades.AAPL","seq":4,"data":{"id":"t-11","ts":"2026-11-26T12:59:59.999Z"}}`, time.Millisecond},
		{`{"channel":"trades.AAPL","type":"trade","seq":5,"data":{"ts":"2026-11-26T12:59:59Z","id":"t-12"}}`, time.Second},
		{`{"type":"trade","channel":"trades.AAPL","seq":6,"data":{"id":"t-1","ts":"2026-11-26T12:59:59.5Z"}}`, 500 * time.Millisecond},
	}
	for _, m := range messages {
		c.count([]byte(m.text), base.UnixMicro(), base.UnixMicro(), 0)
	}
	if c.messages != 5 || c.gaps != 1 || c.lastSeq != 6 || len(c.arrivalUs) != 5 {
		t.Fatalf("messages %d, gaps %d, last seq %d, latencies %v", c.messages, c.gaps, c.lastSeq, c.arrivalUs)
	}
	for i, m := range messages {
		if c.arrivalUs[i] != int32(m.delay.Microseconds()) {
			t.Errorf("message %d: %d µs, want %d", i+1, c.arrivalUs[i], m.delay.Microseconds())
		}
	}
}
