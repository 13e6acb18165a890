package streaming

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"
)

func TestStreamTokensAreSingleUseAndExpire(t *testing.T) {
	s, err := NewServer("127.0.0.1:0", &Sessions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.lis.Close()
	resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Url, "http://"+s.Addr()+"/exec/") {
		t.Fatalf("URL %s is not on %s", resp.Url, s.Addr())
	}
	// A request that is no upgrade still uses the URL up.
	for i, want := range []int{http.StatusBadRequest, http.StatusNotFound} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", resp.Url, nil))
		if w.Code != want {
			t.Fatalf("use %d: status %d, want %d: %s", i+1, w.Code, want, w.Body)
		}
	}
	// An expired token is gone.
	pf, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "p"})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.expire(time.Now().Add(tokenTTL + time.Second))
	n := len(s.pending)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d tokens left after they expired", n)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", pf.Url, nil))
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "expired") {
		t.Fatalf("expired token: %d %s", w.Code, w.Body)
	}
	// The oldest make room for new ones.
	for i := range maxPending + 10 {
		s.remember(fmt.Sprintf("http://x/attach/t%d", i), &runtimeapi.AttachRequest{})
	}
	if _, ok := s.consume("t0"); ok || len(s.pending) != maxPending {
		t.Fatalf("%d tokens kept, the oldest found: %v", len(s.pending), ok)
	}
}

func TestExecStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, `{"metadata":{},"status":"Success"}`},
		{utilexec.CodeExitError{Err: errors.New("exited with 3"), Code: 3}, `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exited with 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`},
		{errors.New("no such container"), `{"metadata":{},"status":"Failure","message":"Internal error occurred: no such container","reason":"InternalError","code":500}`},
	} {
		b, _ := json.Marshal(execStatus(c.err))
		if string(b) != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.err, b, c.want)
		}
	}
}
