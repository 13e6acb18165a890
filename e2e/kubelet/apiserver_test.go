package kubelet

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// fakeAPI is a minimal Kubernetes API server for one kubelet, in memory, on
// plain HTTP on 127.0.0.1, speaking JSON only (the kubelet is configured
// with contentType application/json). It exists so that kubelet has an API
// client, without which it ignores a pod's runtimeClassName: RuntimeClass
// objects only come from an API server.
//
// It serves a fixed set of resources (apiResources) generically: get, list
// and watch (with field selectors on string fields, such as spec.nodeName,
// and the watch-list protocol's initial events and bookmark), create, update (with resourceVersion preconditions), patch
// (strategic merge, JSON merge) and delete, for the subresource status too
// (which, unlike the real server's, also takes changes to the spec).
// There is no authentication, authorisation, admission, validation,
// defaulting, garbage collection or controller: kubelet's node keeps what
// kubelet writes, its mirror pods stay until kubelet deletes them. Other
// paths are logged, so that gaps show, and answered 404.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	rv      int64                                // the last resourceVersion given
	objects map[string]map[string]map[string]any // resource -> namespace/name -> object
	changes []change                             // every change, in resourceVersion order
	changed chan struct{}                        // closed (and replaced) at each change
	calls   map[string]int                       // "GET /v1/nodes watch" -> count
	unknown map[string]int                       // paths of no known resource -> count
	trace   []string                             // every request and its answer, logged if the test fails
	closed  bool
	done    chan struct{} // closed by close: watches end
}

// apiResource is a resource the fake serves, keyed in apiResources by
// "group/version/resource" ("/v1/pods" for the core group).
type apiResource struct {
	kind       string
	namespaced bool
	typ        any // a zero value of its Go type, for strategic merge patches
}

var apiResources = map[string]apiResource{
	"/v1/nodes":                           {"Node", false, corev1.Node{}},
	"/v1/pods":                            {"Pod", true, corev1.Pod{}},
	"/v1/services":                        {"Service", true, corev1.Service{}},
	"/v1/configmaps":                      {"ConfigMap", true, corev1.ConfigMap{}},
	"/v1/secrets":                         {"Secret", true, corev1.Secret{}},
	"/v1/events":                          {"Event", true, corev1.Event{}},
	"/v1/namespaces":                      {"Namespace", false, corev1.Namespace{}},
	"node.k8s.io/v1/runtimeclasses":       {"RuntimeClass", false, nodev1.RuntimeClass{}},
	"storage.k8s.io/v1/csidrivers":        {"CSIDriver", false, storagev1.CSIDriver{}},
	"storage.k8s.io/v1/csinodes":          {"CSINode", false, storagev1.CSINode{}},
	"coordination.k8s.io/v1/leases":       {"Lease", true, coordinationv1.Lease{}},
	"storage.k8s.io/v1/volumeattachments": {"VolumeAttachment", false, storagev1.VolumeAttachment{}},
}

// change is one write to the store, as a watch event.
type change struct {
	rv       int64
	typ      string // ADDED, MODIFIED, DELETED
	resource string
	obj      map[string]any
}

// startFakeAPI starts the fake API server; the test's cleanup stops it
// (after the node's, which kubelet's must precede) and logs which requests
// it served.
func startFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{
		t:       t,
		objects: map[string]map[string]map[string]any{},
		changed: make(chan struct{}),
		calls:   map[string]int{},
		unknown: map[string]int{},
		done:    make(chan struct{}),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.close)
	return f
}

// close ends the watches and stops the server, then logs the requests
// served.
func (f *fakeAPI) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	f.mu.Unlock()
	f.srv.Close()
	f.t.Logf("fake API server: requests served:\n%s", f.callSummary())
	if f.t.Failed() {
		f.t.Logf("fake API server: every request:\n%s", strings.Join(f.trace, "\n"))
	}
}

// callSummary lists the requests served, one kind a line with its count.
func (f *fakeAPI) callSummary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for k, n := range f.calls {
		lines = append(lines, fmt.Sprintf("  %s: %d", k, n))
	}
	for k, n := range f.unknown {
		lines = append(lines, fmt.Sprintf("  unknown %s: %d", k, n))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// served reports how many requests of a kind (as callSummary names them:
// "POST /v1/nodes") the fake answered.
func (f *fakeAPI) served(call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[call]
}

// logf logs through the test while it runs.
func (f *fakeAPI) logf(format string, args ...any) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if !closed {
		f.t.Logf("fake API server: "+format, args...)
	}
}

// kubeconfig writes a kubeconfig for the fake into dir and returns its path.
func (f *fakeAPI) kubeconfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []any{map[string]any{"name": "fake", "cluster": map[string]any{"server": f.srv.URL}}},
		"users":           []any{map[string]any{"name": "kubelet", "user": map[string]any{}}},
		"contexts":        []any{map[string]any{"name": "fake", "context": map[string]any{"cluster": "fake", "user": "kubelet"}}},
		"current-context": "fake",
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// add stores obj (a typed API object) in resource ("node.k8s.io/v1/runtimeclasses").
func (f *fakeAPI) add(t *testing.T, resource string, obj any) {
	t.Helper()
	m, err := toMap(obj)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := m["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if _, status := f.create(resource, ns, name, m); status != nil {
		t.Fatalf("fake API server: add %s %s/%s: %s", resource, ns, name, status["message"])
	}
}

// get returns a copy of the stored object, or nil.
func (f *fakeAPI) get(resource, ns, name string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	obj := f.objects[resource][ns+"/"+name]
	if obj == nil {
		return nil
	}
	c, _ := toMap(obj)
	return c
}

// list returns copies of the stored objects of resource.
func (f *fakeAPI) list(resource string) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, obj := range f.objects[resource] {
		c, _ := toMap(obj)
		out = append(out, c)
	}
	return out
}

func toMap(obj any) (map[string]any, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// request is an API request's resource path, parsed.
type request struct {
	resource       string // "group/version/resource"
	group, version string
	ns, name, sub  string
}

// parsePath parses /api/v1/[namespaces/NS/]RES[/NAME[/SUB]] and
// /apis/GROUP/VERSION/[namespaces/NS/]RES[/NAME[/SUB]].
func parsePath(path string) (request, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var r request
	var rest []string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		r.version, rest = parts[1], parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		r.group, r.version, rest = parts[1], parts[2], parts[3:]
	default:
		return r, false
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		r.ns, rest = rest[1], rest[2:]
	}
	if len(rest) > 3 {
		return r, false
	}
	r.resource = r.group + "/" + r.version + "/" + rest[0]
	if len(rest) > 1 {
		r.name = rest[1]
	}
	if len(rest) > 2 {
		r.sub = rest[2]
	}
	return r, true
}

// tracer records a request's answer in the trace.
type tracer struct {
	http.ResponseWriter
	code int
}

func (t *tracer) WriteHeader(code int) {
	t.code = code
	t.ResponseWriter.WriteHeader(code)
}

func (t *tracer) Flush() {
	if fl, ok := t.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	tw := &tracer{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		line := fmt.Sprintf("  %s %s %s: %d (%s)", start.Format("15:04:05.000"), r.Method, r.URL.RequestURI(), tw.code, time.Since(start).Round(time.Millisecond))
		f.mu.Lock()
		f.trace = append(f.trace, line)
		f.mu.Unlock()
	}()
	f.route(tw, r)
}

func (f *fakeAPI) route(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/livez", "/readyz":
		f.count(r.Method + " " + r.URL.Path)
		io.WriteString(w, "ok")
		return
	case "/version":
		f.count(r.Method + " " + r.URL.Path)
		writeJSON(w, http.StatusOK, map[string]any{"major": "1", "minor": "37", "gitVersion": "v1.37.2-fake", "platform": "linux/amd64"})
		return
	}
	req, ok := parsePath(r.URL.Path)
	res, known := apiResources[req.resource]
	if !ok || !known || (req.ns != "" && !res.namespaced) || (req.sub != "" && req.sub != "status") {
		f.mu.Lock()
		f.unknown[r.Method+" "+r.URL.Path]++
		first := f.unknown[r.Method+" "+r.URL.Path] == 1
		f.mu.Unlock()
		if first {
			f.logf("no such resource: %s %s", r.Method, r.URL.RequestURI())
		}
		writeStatus(w, notFound("", r.URL.Path))
		return
	}
	q := r.URL.Query()
	watch := q.Get("watch") == "true" || q.Get("watch") == "1"
	call := r.Method + " " + req.resource
	if req.sub != "" {
		call += "/" + req.sub
	}
	if watch {
		call += " watch"
	} else if r.Method == http.MethodGet && req.name == "" {
		call += " list"
	}
	f.count(call)

	switch {
	case r.Method == http.MethodGet && req.name == "" && watch:
		f.watch(w, r, req, res)
	case r.Method == http.MethodGet && req.name == "":
		sel, err := parseFieldSelector(q.Get("fieldSelector"))
		if err != nil {
			writeStatus(w, badRequest(err.Error()))
			return
		}
		f.mu.Lock()
		items := f.matching(req.resource, req.ns, sel)
		rv := f.rv
		f.mu.Unlock()
		if items == nil {
			items = []map[string]any{}
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"kind": res.kind + "List", "apiVersion": apiVersion(req),
			"metadata": map[string]any{"resourceVersion": strconv.FormatInt(rv, 10)},
			"items":    items,
		})
	case r.Method == http.MethodGet:
		if obj := f.get(req.resource, req.ns, req.name); obj != nil {
			writeJSON(w, http.StatusOK, obj)
		} else {
			writeStatus(w, notFound(res.kind, req.name))
		}
	case r.Method == http.MethodPost && req.name == "":
		body, err := readObject(r)
		if err != nil {
			writeStatus(w, badRequest(err.Error()))
			return
		}
		meta, _ := body["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		if name == "" {
			if gen, _ := meta["generateName"].(string); gen != "" {
				name = gen + randomHex(3)[:5]
			}
		}
		obj, status := f.create(req.resource, req.ns, name, body)
		if status != nil {
			writeStatus(w, status)
			return
		}
		writeJSON(w, http.StatusCreated, obj)
	case r.Method == http.MethodPut && req.name != "":
		body, err := readObject(r)
		if err != nil {
			writeStatus(w, badRequest(err.Error()))
			return
		}
		obj, status := f.update(req, body, false)
		if status != nil {
			writeStatus(w, status)
			return
		}
		writeJSON(w, http.StatusOK, obj)
	case r.Method == http.MethodPatch && req.name != "":
		patch, err := io.ReadAll(r.Body)
		if err != nil {
			writeStatus(w, badRequest(err.Error()))
			return
		}
		obj, status := f.patch(req, res, r.Header.Get("Content-Type"), patch)
		if status != nil {
			writeStatus(w, status)
			return
		}
		writeJSON(w, http.StatusOK, obj)
	case r.Method == http.MethodDelete && req.name != "" && req.sub == "":
		obj, status := f.delete(req, res)
		if status != nil {
			writeStatus(w, status)
			return
		}
		writeJSON(w, http.StatusOK, obj)
	default:
		f.logf("unsupported request: %s %s", r.Method, r.URL.RequestURI())
		writeStatus(w, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
			"message": "the fake API server does not support " + r.Method + " here", "reason": "MethodNotAllowed", "code": http.StatusMethodNotAllowed})
	}
}

func (f *fakeAPI) count(call string) {
	f.mu.Lock()
	f.calls[call]++
	f.mu.Unlock()
}

func apiVersion(r request) string {
	if r.group == "" {
		return r.version
	}
	return r.group + "/" + r.version
}

// resourceRequest is the request that names obj of resource.
func resourceRequest(resource string) request {
	parts := strings.SplitN(resource, "/", 3)
	return request{resource: resource, group: parts[0], version: parts[1]}
}

// create stores a new object; status is a failure Status.
func (f *fakeAPI) create(resource, ns, name string, obj map[string]any) (map[string]any, map[string]any) {
	res := apiResources[resource]
	if name == "" {
		return nil, badRequest("metadata.name or generateName is required")
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	if res.namespaced {
		if ns == "" {
			ns, _ = meta["namespace"].(string)
		}
		if ns == "" {
			return nil, badRequest("a namespaced object needs a namespace")
		}
		meta["namespace"] = ns
	} else {
		ns = ""
		delete(meta, "namespace")
	}
	meta["name"] = name
	obj["kind"], obj["apiVersion"] = res.kind, apiVersion(resourceRequest(resource))
	meta["uid"] = uuid()
	meta["creationTimestamp"] = time.Now().UTC().Format(time.RFC3339)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.objects[resource] == nil {
		f.objects[resource] = map[string]map[string]any{}
	}
	if f.objects[resource][ns+"/"+name] != nil {
		return nil, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": http.StatusConflict,
			"message": fmt.Sprintf("%s %q already exists", res.kind, name), "details": map[string]any{"name": name, "kind": res.kind}}
	}
	f.store(resource, ns+"/"+name, obj, "ADDED")
	c, _ := toMap(obj)
	return c, nil
}

// update replaces an object (or its status) with obj; with patched, obj
// derives from the stored one, so its resourceVersion is not a
// precondition.
func (f *fakeAPI) update(req request, obj map[string]any, patched bool) (map[string]any, map[string]any) {
	res := apiResources[req.resource]
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	if n, _ := meta["name"].(string); n != req.name {
		return nil, badRequest(fmt.Sprintf("metadata.name %q is not the name in the path, %q", n, req.name))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.objects[req.resource][req.ns+"/"+req.name]
	if old == nil {
		return nil, notFound(res.kind, req.name)
	}
	oldMeta := old["metadata"].(map[string]any)
	if rv, _ := meta["resourceVersion"].(string); !patched && rv != "" && rv != oldMeta["resourceVersion"] {
		return nil, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": http.StatusConflict,
			"message": fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; please apply your changes to the latest version and try again", req.resource, req.name)}
	}
	for _, k := range []string{"uid", "creationTimestamp", "namespace"} {
		if v, ok := oldMeta[k]; ok {
			meta[k] = v
		}
	}
	obj["kind"], obj["apiVersion"] = res.kind, apiVersion(req)
	f.store(req.resource, req.ns+"/"+req.name, obj, "MODIFIED")
	c, _ := toMap(obj)
	return c, nil
}

// patch applies a strategic merge or JSON merge patch.
func (f *fakeAPI) patch(req request, res apiResource, contentType string, patch []byte) (map[string]any, map[string]any) {
	old := f.get(req.resource, req.ns, req.name)
	if old == nil {
		return nil, notFound(res.kind, req.name)
	}
	orig, err := json.Marshal(old)
	if err != nil {
		return nil, badRequest(err.Error())
	}
	var patched []byte
	switch strings.TrimSpace(strings.Split(contentType, ";")[0]) {
	case "application/strategic-merge-patch+json":
		patched, err = strategicpatch.StrategicMergePatch(orig, patch, res.typ)
	case "application/merge-patch+json":
		var p any
		if err = json.Unmarshal(patch, &p); err == nil {
			patched, err = json.Marshal(mergePatch(old, p))
		}
	default:
		f.logf("unsupported patch type %q for %s %s/%s: %s", contentType, req.resource, req.ns, req.name, patch)
		return nil, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "UnsupportedMediaType", "code": http.StatusUnsupportedMediaType,
			"message": "the fake API server takes strategic merge and JSON merge patches only, not " + contentType}
	}
	if err != nil {
		return nil, badRequest(fmt.Sprintf("patch %s: %v", req.name, err))
	}
	var obj map[string]any
	if err := json.Unmarshal(patched, &obj); err != nil {
		return nil, badRequest(err.Error())
	}
	return f.update(req, obj, true)
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = mergePatch(t[k], v)
		}
	}
	return t
}

func (f *fakeAPI) delete(req request, res apiResource) (map[string]any, map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := req.ns + "/" + req.name
	old := f.objects[req.resource][key]
	if old == nil {
		return nil, notFound(res.kind, req.name)
	}
	c, _ := toMap(old)
	delete(f.objects[req.resource], key)
	f.rv++
	c["metadata"].(map[string]any)["resourceVersion"] = strconv.FormatInt(f.rv, 10)
	f.changes = append(f.changes, change{rv: f.rv, typ: "DELETED", resource: req.resource, obj: c})
	close(f.changed)
	f.changed = make(chan struct{})
	return c, nil
}

// store writes obj under a new resourceVersion and records the change;
// f.mu is held.
func (f *fakeAPI) store(resource, key string, obj map[string]any, typ string) {
	f.rv++
	obj["metadata"].(map[string]any)["resourceVersion"] = strconv.FormatInt(f.rv, 10)
	if f.objects[resource] == nil {
		f.objects[resource] = map[string]map[string]any{}
	}
	f.objects[resource][key] = obj // never changed after this: readers copy
	f.changes = append(f.changes, change{rv: f.rv, typ: typ, resource: resource, obj: obj})
	close(f.changed)
	f.changed = make(chan struct{})
}

// matching returns the objects of resource in ns ("" for all) that sel
// accepts; f.mu is held.
func (f *fakeAPI) matching(resource, ns string, sel fieldSelector) []map[string]any {
	var keys []string
	for k := range f.objects[resource] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []map[string]any
	for _, k := range keys {
		obj := f.objects[resource][k]
		if inNamespace(obj, ns) && sel.matches(obj) {
			out = append(out, obj)
		}
	}
	return out
}

func inNamespace(obj map[string]any, ns string) bool {
	if ns == "" {
		return true
	}
	got, _ := lookup(obj, "metadata.namespace").(string)
	return got == ns
}

// watch streams the changes of a resource after the request's
// resourceVersion (after the current state, sent as ADDED events, when it
// is "" or "0" or the client asks for initial events), until the client
// goes, timeoutSeconds pass or the fake closes.
func (f *fakeAPI) watch(w http.ResponseWriter, r *http.Request, req request, res apiResource) {
	q := r.URL.Query()
	sel, err := parseFieldSelector(q.Get("fieldSelector"))
	if err != nil {
		writeStatus(w, badRequest(err.Error()))
		return
	}
	var from int64
	if v := q.Get("resourceVersion"); v != "" {
		if from, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeStatus(w, badRequest("bad resourceVersion "+v))
			return
		}
	}
	timeout := 30 * time.Minute
	if v := q.Get("timeoutSeconds"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s > 0 {
			timeout = time.Duration(s) * time.Second
		}
	}
	initial := q.Get("sendInitialEvents") == "true"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(typ string, obj map[string]any) bool {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}

	f.mu.Lock()
	var events []change
	if initial || from == 0 {
		for _, obj := range f.matching(req.resource, req.ns, sel) {
			events = append(events, change{typ: "ADDED", obj: obj})
		}
		from = f.rv
	}
	if initial {
		events = append(events, change{typ: "BOOKMARK", obj: map[string]any{
			"kind": res.kind, "apiVersion": apiVersion(req),
			"metadata": map[string]any{"resourceVersion": strconv.FormatInt(from, 10), "annotations": map[string]any{"k8s.io/initial-events-end": "true"}},
		}})
	}
	f.mu.Unlock()

	end := time.After(timeout)
	for {
		for _, e := range events {
			if !send(e.typ, e.obj) {
				return
			}
		}
		f.mu.Lock()
		changed := f.changed
		events = nil
		for _, c := range f.changes {
			if c.rv <= from || c.resource != req.resource || !inNamespace(c.obj, req.ns) || !sel.matches(c.obj) {
				continue
			}
			events = append(events, c)
		}
		from = f.rv
		f.mu.Unlock()
		if len(events) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		case <-end:
			return
		}
	}
}

// fieldSelector is a parsed field selector: terms of field=value or
// field!=value, all of which must hold.
type fieldSelector []struct {
	field, value string
	not          bool
}

func parseFieldSelector(s string) (fieldSelector, error) {
	var sel fieldSelector
	if s == "" {
		return sel, nil
	}
	for _, term := range strings.Split(s, ",") {
		field, value, not := "", "", false
		if a, b, ok := strings.Cut(term, "!="); ok {
			field, value, not = a, b, true
		} else if a, b, ok := strings.Cut(term, "=="); ok {
			field, value = a, b
		} else if a, b, ok := strings.Cut(term, "="); ok {
			field, value = a, b
		} else {
			return nil, fmt.Errorf("field selector term %q has no operator", term)
		}
		if field == "" || strings.Trim(field, ".") != field {
			return nil, fmt.Errorf("field selector term %q names no field", term)
		}
		sel = append(sel, struct {
			field, value string
			not          bool
		}{field, value, not})
	}
	return sel, nil
}

func (sel fieldSelector) matches(obj map[string]any) bool {
	for _, term := range sel {
		got, _ := lookup(obj, term.field).(string) // "" if unset, as the server's field sets have it
		if (got == term.value) == term.not {
			return false
		}
	}
	return true
}

// lookup returns the value at a dotted path of obj, or nil.
func lookup(obj map[string]any, path string) any {
	var v any = obj
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func readObject(r *http.Request) (map[string]any, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return nil, fmt.Errorf("the fake API server reads JSON only, not %s", ct)
	}
	var obj map[string]any
	if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
		return nil, fmt.Errorf("decode the request's object: %w", err)
	}
	return obj, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, status map[string]any) {
	code, _ := status["code"].(int)
	writeJSON(w, code, status)
}

func notFound(kind, name string) map[string]any {
	return map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": http.StatusNotFound,
		"message": fmt.Sprintf("%s %q not found", kind, name), "details": map[string]any{"name": name, "kind": kind}}
}

func badRequest(msg string) map[string]any {
	return map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": http.StatusBadRequest, "message": msg}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// uuid is a random (version 4) UUID.
func uuid() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
