package main

// A WebSocket client connection cut down to what measuring needs (RFC 6455).
// gorilla/websocket did the job, but on this machine the clients share two
// cores with the server they measure, and its per-message work (a reader per
// message, a copy into a buffer, a clock read) took more than half a core at
// 1M messages/s: CPU taken from the server, and latency added to what it
// measures. Here a read from the socket is parsed in place, frame by frame,
// and each read gives two times: the kernel's receive stamp of its bytes
// (SO_TIMESTAMPNS: when they were there for the client, as a client on a
// machine of its own would see them) and when this process read them (later
// by however long it waited for a core it shares with the server).

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
	acceptGUID     = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

var errProtocol = errors.New("websocket protocol error")

// dial opens a WebSocket connection; what the server sent past its handshake
// response is returned with it (the first frames may come in the same read).
func dial(address string, timeout time.Duration) (net.Conn, []byte, error) {
	target, err := url.Parse(address)
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.DialTimeout("tcp", target.Host, timeout)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nOrigin: http://%s\r\n\r\n",
		target.RequestURI(), target.Host, key, target.Host)
	if _, err := conn.Write([]byte(request)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	reader := bufio.NewReaderSize(conn, 64<<10)
	response, err := http.ReadResponse(reader, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	digest := sha1.Sum([]byte(key + acceptGUID))
	if response.StatusCode != http.StatusSwitchingProtocols ||
		response.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(digest[:]) {
		conn.Close()
		return nil, nil, fmt.Errorf("handshake refused: %s", response.Status)
	}
	rest, _ := reader.Peek(reader.Buffered())
	conn.SetDeadline(time.Time{})
	return conn, append([]byte(nil), rest...), nil
}

// frame is one parsed frame; payload points into the read buffer.
type frame struct {
	fin     bool
	opcode  byte
	payload []byte
	size    int // header and payload
}

// nextFrame parses the frame at the start of data; ok is false until it is all there.
func nextFrame(data []byte) (f frame, ok bool, err error) {
	if len(data) < 2 {
		return f, false, nil
	}
	if data[1]&0x80 != 0 {
		return f, false, errProtocol // a server never masks
	}
	f.fin, f.opcode = data[0]&0x80 != 0, data[0]&0x0f
	length, header := uint64(data[1]&0x7f), 2
	switch length {
	case 126:
		if len(data) < 4 {
			return f, false, nil
		}
		length, header = uint64(binary.BigEndian.Uint16(data[2:])), 4
	case 127:
		if len(data) < 10 {
			return f, false, nil
		}
		length, header = binary.BigEndian.Uint64(data[2:]), 10
	}
	if length > 1<<30 {
		return f, false, errProtocol
	}
	f.size = header + int(length)
	if len(data) < f.size {
		return f, false, nil
	}
	f.payload = data[header:f.size]
	return f, true, nil
}

// control sends a control frame (a pong, a close) with its payload, masked as a client must.
func control(conn net.Conn, opcode byte, payload []byte) error {
	if len(payload) > 125 {
		return errProtocol
	}
	out := make([]byte, 6+len(payload))
	out[0], out[1] = 0x80|opcode, 0x80|byte(len(payload))
	rand.Read(out[2:6])
	for i, b := range payload {
		out[6+i] = b ^ out[2+i%4]
	}
	_, err := conn.Write(out)
	return err
}

// closeCode is a close frame's status code (1005, "none", when it has none).
func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}

const timespecSize = 16 // struct timespec on 64-bit Linux: seconds, nanoseconds

// timedReader reads a connection with the kernel's receive time of what each read returns.
type timedReader struct {
	conn net.Conn
	raw  syscall.RawConn // nil: no kernel timestamps (not a TCP connection)
	oob  []byte
}

func newTimedReader(conn net.Conn) *timedReader {
	reader := &timedReader{conn: conn}
	if tcp, ok := conn.(*net.TCPConn); ok {
		if raw, err := tcp.SyscallConn(); err == nil {
			var setErr error
			raw.Control(func(fd uintptr) {
				setErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
			})
			if setErr == nil {
				reader.raw, reader.oob = raw, make([]byte, syscall.CmsgSpace(timespecSize))
			}
		}
	}
	return reader
}

// read fills buffer like conn.Read, and tells when its bytes arrived and when
// they were read. arrivedAt is the zero time when the kernel gave no stamp.
// For TCP the stamp is that of the newest segment in the last buffer the read
// copies from, so never earlier than any byte it returns arrived; on loopback
// the kernel takes it while the sender's send() runs.
func (r *timedReader) read(buffer []byte) (n int, arrivedAt, readAt time.Time, err error) {
	if r.raw == nil {
		n, err = r.conn.Read(buffer)
		return n, time.Time{}, time.Now(), err
	}
	var oobn, flags int
	var recvErr error
	err = r.raw.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, _, recvErr = syscall.Recvmsg(int(fd), buffer, r.oob, 0)
			if recvErr != syscall.EINTR {
				return recvErr != syscall.EAGAIN // EAGAIN: wait until the socket is readable
			}
		}
	})
	readAt = time.Now()
	if err == nil {
		err = recvErr
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil || flags&syscall.MSG_CTRUNC != 0 {
		return n, time.Time{}, readAt, err
	}
	if messages, parseErr := syscall.ParseSocketControlMessage(r.oob[:oobn]); parseErr == nil {
		for _, m := range messages {
			if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS &&
				len(m.Data) >= timespecSize {
				arrivedAt = time.Unix(int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:])))
			}
		}
	}
	return n, arrivedAt, readAt, nil
}

// readMessages calls onMessage for each complete text or binary message, with
// the times of the read that completed it (see timedReader; the bytes that
// came with the handshake have no arrival time), until the connection fails or
// the server closes it (then the close code; the caller closes the connection).
func readMessages(conn net.Conn, pending []byte, onMessage func(message []byte, arrivedAt, readAt time.Time)) (int, error) {
	buffer := make([]byte, max(256<<10, 2*len(pending)))
	filled := copy(buffer, pending)
	reader := newTimedReader(conn)
	var arrivedAt time.Time
	readAt := time.Now()
	var fragments []byte // a message sent in several frames (rare: the server sends whole ones)
	for {
		start := 0
		for {
			f, ok, err := nextFrame(buffer[start:filled])
			if err != nil {
				return 0, err
			}
			if !ok {
				break
			}
			start += f.size
			switch f.opcode {
			case opText, opBinary:
				if f.fin {
					onMessage(f.payload, arrivedAt, readAt)
				} else {
					fragments = append(fragments[:0], f.payload...)
				}
			case opContinuation:
				fragments = append(fragments, f.payload...)
				if f.fin {
					onMessage(fragments, arrivedAt, readAt)
				}
			case opClose: // answered with the same code, as the closing handshake asks
				code := closeCode(f.payload)
				control(conn, opClose, f.payload[:min(len(f.payload), 2)])
				return code, nil
			case opPing:
				if err := control(conn, opPong, f.payload); err != nil {
					return 0, err
				}
			}
		}
		filled = copy(buffer, buffer[start:filled]) // the partial frame left, to the front
		if filled == len(buffer) {
			buffer = append(buffer, make([]byte, len(buffer))...) // a frame larger than the buffer
		}
		var n int
		var err error
		n, arrivedAt, readAt, err = reader.read(buffer[filled:])
		if err != nil {
			return 0, err
		}
		filled += n
	}
}
