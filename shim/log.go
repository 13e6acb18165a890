package shim

import (
	"bytes"
	"io"
	"os"
	"sync"
	"time"
)

// maxLogLine is the longest content of one CRI log entry; a longer line is
// split into partial (P) entries and a full (F) one for the rest.
const maxLogLine = 16 << 10

// criLog is the container's CRI log file, shared by its two streams.
type criLog struct {
	path string

	mu sync.Mutex
	f  *os.File // nil: discard
}

func openCRILog(path string) (*criLog, error) {
	l := &criLog{path: path}
	if path == "" {
		return l, nil
	}
	return l, l.reopen()
}

// reopen opens the log file again, e.g. after kubelet renamed it away. On
// failure the old file stays in use.
func (l *criLog) reopen() error {
	if l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// write appends one entry. An entry that cannot be written is dropped: the
// container never waits for its log.
func (l *criLog) write(entry []byte) {
	l.mu.Lock()
	if l.f != nil {
		l.f.Write(entry)
	}
	l.mu.Unlock()
}

func (l *criLog) close() {
	l.mu.Lock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.mu.Unlock()
}

// output is one output stream of the container on its way to the log.
type output struct {
	stream string       // "stdout" or "stderr"
	crlf   bool         // a terminal's output: drop the \r of each \r\n in the log
	tee    func([]byte) // gets each chunk read, before it is logged; may be nil
}

// copy copies the stream from r to the log, one CRI entry per line:
//
//	2006-01-02T15:04:05.999999999Z07:00 stdout F content
//
// A line is held until its newline arrives or it exceeds maxLogLine; what
// is left without a newline at the end of the stream is a partial entry.
// It returns when r reaches its end (or fails, as a pty master whose
// terminal is closed).
func (o output) copy(r io.Reader, l *criLog) {
	// The buffer grows, up to maxLogLine and room to read, only for long
	// lines.
	buf := make([]byte, 4<<10)
	entry := make([]byte, 0, 64)
	emit := func(tag byte, content []byte) {
		entry = time.Now().AppendFormat(entry[:0], time.RFC3339Nano)
		entry = append(entry, ' ')
		entry = append(entry, o.stream...)
		entry = append(entry, ' ', tag, ' ')
		entry = append(entry, content...)
		entry = append(entry, '\n')
		l.write(entry)
	}
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, min(len(buf), maxLogLine+4<<10-len(buf)))...)
		}
		m, err := r.Read(buf[n:])
		if m > 0 && o.tee != nil {
			o.tee(buf[n : n+m])
		}
		n += m
		start := 0
		for {
			i := bytes.IndexByte(buf[start:n], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i]
			if o.crlf && i > 0 && line[i-1] == '\r' {
				line = line[:i-1]
			}
			for len(line) > maxLogLine {
				emit('P', line[:maxLogLine])
				line = line[maxLogLine:]
			}
			emit('F', line)
			start += i + 1
		}
		// A line of exactly maxLogLine bytes may still end in a full entry.
		for n-start > maxLogLine {
			emit('P', buf[start:start+maxLogLine])
			start += maxLogLine
		}
		n = copy(buf, buf[start:n])
		if err != nil {
			if n > 0 {
				emit('P', buf[:n])
			}
			return
		}
	}
}
