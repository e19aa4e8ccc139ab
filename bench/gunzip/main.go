// Command gunzip decompresses gzip files one after the other on one goroutine and discards
// the output: the benchmark's baseline for "the work itself" (klauspost/compress, the
// decoder the issue quotes). It prints the compressed and uncompressed byte counts.
//
//	GOMAXPROCS=1 gunzip FILE...
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gunzip FILE...")
		os.Exit(2)
	}
	var in, out int64
	for _, name := range os.Args[1:] {
		n, m, err := gunzip(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gunzip:", err)
			os.Exit(1)
		}
		in += n
		out += m
	}
	fmt.Printf("%d files, %d bytes in, %d bytes out\n", len(os.Args)-1, in, out)
}

func gunzip(name string) (in, out int64, err error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	out, err = io.Copy(io.Discard, zr)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	return st.Size(), out, nil
}
