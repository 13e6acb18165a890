package image

import "testing"

func TestReconfigure(t *testing.T) {
	s, err := New(Options{Root: t.TempDir(), Pinned: []string{"busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.pinned["docker.io/library/busybox:latest"] || len(s.reg.Load().endpoints("docker.io")) != 1 {
		t.Fatalf("before: pinned %v, endpoints %v", s.pinned, s.reg.Load().endpoints("docker.io"))
	}
	before := s.reg.Load()
	if err := s.Reconfigure(map[string]RegistryConfig{"docker.io": {Mirrors: []string{"ftp://m"}}}, []string{"alpine"}); err == nil {
		t.Fatal("a bad mirror accepted")
	}
	if err := s.Reconfigure(nil, []string{"UPPER"}); err == nil {
		t.Fatal("a bad pinned reference accepted")
	}
	if s.reg.Load() != before || !s.pinned["docker.io/library/busybox:latest"] || len(s.pinned) != 1 {
		t.Fatal("a failed Reconfigure changed the store")
	}
	if err := s.Reconfigure(map[string]RegistryConfig{"docker.io": {Mirrors: []string{"http://127.0.0.1:5000"}, MirrorsOnly: true}}, []string{"alpine:3"}); err != nil {
		t.Fatal(err)
	}
	if eps := s.reg.Load().endpoints("docker.io"); len(eps) != 1 || eps[0].host != "127.0.0.1:5000" || !eps[0].mirror {
		t.Errorf("endpoints after: %+v", eps)
	}
	if s.pinned["docker.io/library/busybox:latest"] || !s.pinned["docker.io/library/alpine:3"] {
		t.Errorf("pinned after: %v", s.pinned)
	}
}
