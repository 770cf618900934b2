package main

import (
	"math/rand"
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
