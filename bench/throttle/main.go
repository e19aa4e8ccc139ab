// Command throttle is a TCP proxy that limits what flows from the target to the clients,
// all connections together, to -rate bytes per second: the benchmark's stand-in for a real
// network link in front of the loopback registry (a registry on the Internet is rarely faster
// than the disk, so whether a tool unpacks while it downloads decides its time there).
//
//	throttle -listen 127.0.0.1:PORT -target 127.0.0.1:REGISTRY -rate 50e6
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"sync"
	"time"
)

// bucket is a token bucket shared by every connection; it holds at most 100 ms of tokens.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	last   time.Time
	tokens float64
}

// take waits until n bytes may pass.
func (b *bucket) take(n int) {
	for {
		b.mu.Lock()
		now := time.Now()
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, b.rate/10)
		b.last = now
		if b.tokens >= float64(n) {
			b.tokens -= float64(n)
			b.mu.Unlock()
			return
		}
		wait := time.Duration((float64(n) - b.tokens) / b.rate * float64(time.Second))
		b.mu.Unlock()
		time.Sleep(wait)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "address to forward to")
	rate := flag.Float64("rate", 50e6, "bytes per second from the target to the clients")
	flag.Parse()
	if *target == "" || *rate <= 0 {
		log.Fatal("usage: throttle -listen ADDR -target ADDR -rate BYTES_PER_S")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	b := &bucket{rate: *rate, last: time.Now()}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go forward(c, *target, b)
	}
}

// forward relays one connection: requests as they come, responses through the bucket.
func forward(c net.Conn, target string, b *bucket) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(s, c) }()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			b.take(n)
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
