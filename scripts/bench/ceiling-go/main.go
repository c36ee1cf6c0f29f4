// The CA's ceiling, in Go: a minimal ACME client that issues N
// certificates as fast as a CA lets one account go, at a small fraction
// of the CPU per order the Python client in scripts/bench/ceiling needs.
//
//	ceiling-go DIRECTORY_URL CA_FILE HTTP_PORT [-n N] [--inflight K]
//	           [--poll S] [--exclusive on|off]
//
// Same protocol as scripts/bench/ceiling, which builds and runs this
// program when go is installed: one account (ECDSA P-256), K orders in
// flight (default 32), each a goroutine; one shared keep-alive transport
// (HTTP/1.1, up to K connections); polls every --poll seconds (default
// 0.05); one ECDSA P-256 key per certificate; HTTP-01 answered on
// 127.0.0.1:HTTP_PORT (the CA's httpPort).  Names are c1.ceiling.test
// ... cN.ceiling.test.  Progress lines on stderr every 0.5 s; one line
// of JSON on stdout at the end.  Exit status 0 when all N were issued,
// 1 otherwise.  Only the standard library: no modules to download.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const badNonce = "urn:ietf:params:acme:error:badNonce"

type options struct {
	directory string
	caFile    string
	httpPort  int
	n         int
	inflight  int
	poll      float64
	// Never a newOrder while a request to an authorization or a
	// challenge is in flight, nor such a request while a newOrder is:
	// the daemon's new_order_exclusive, which Pebble 2.4.0 needs not
	// to deadlock.
	exclusive bool
}

// Counters shared by the workers; the JSON line reports them.
type counters struct {
	requests int64
	badnonce int64
	issued   int64
	failed   int64
	// Nanoseconds since the start at the last certificate, for the
	// progress lines scripts/bench/scale reads should the CA hang.
	lastIssued int64
}

type client struct {
	opt        options
	http       *http.Client
	dir        map[string]string
	key        *ecdsa.PrivateKey
	jwk        string // canonical JSON, as the thumbprint hashes it
	thumbprint string
	kid        string
	nonces     nonceSource
	authzLock  sync.RWMutex // newOrder writes, authorizations read
	count      counters
	start      time.Time

	errMu  sync.Mutex
	errors []string
}

// Every response brings a fresh nonce; keeping them in a pool spares a
// HEAD newNonce per request, whichever worker got the response.
type nonceSource struct {
	mu   sync.Mutex
	pool []string
}

func (s *nonceSource) put(n string) {
	if n == "" {
		return
	}
	s.mu.Lock()
	s.pool = append(s.pool, n)
	s.mu.Unlock()
}

func (s *nonceSource) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pool) == 0 {
		return ""
	}
	n := s.pool[len(s.pool)-1]
	s.pool = s.pool[:len(s.pool)-1]
	return n
}

type acmeError struct{ msg string }

func (e *acmeError) Error() string { return e.msg }

func b64u(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

func newClient(opt options) (*client, error) {
	pem, err := os.ReadFile(opt.caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", opt.caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConns:        opt.inflight + 4,
		MaxIdleConnsPerHost: opt.inflight + 4,
		IdleConnTimeout:     90 * time.Second,
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	c := &client{
		opt:  opt,
		http: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		key:  key,
	}
	// RFC 7638: members in lexical order, no whitespace.
	c.jwk = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`,
		b64u(key.X.FillBytes(make([]byte, 32))),
		b64u(key.Y.FillBytes(make([]byte, 32))))
	sum := sha256.Sum256([]byte(c.jwk))
	c.thumbprint = b64u(sum[:])
	return c, nil
}

func (c *client) noteError(err error) {
	c.errMu.Lock()
	if len(c.errors) < 5 {
		c.errors = append(c.errors, err.Error())
	}
	c.errMu.Unlock()
}

// do sends one request and reads the whole body, so that the
// connection goes back to the pool for the next request.
func (c *client) do(method, url string, body []byte) (*http.Response,
	[]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/jose+json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, err
	}
	atomic.AddInt64(&c.count.requests, 1)
	c.nonces.put(resp.Header.Get("Replay-Nonce"))
	return resp, data, nil
}

func (c *client) nonce() (string, error) {
	if n := c.nonces.take(); n != "" {
		return n, nil
	}
	if _, _, err := c.do("HEAD", c.dir["newNonce"], nil); err != nil {
		return "", err
	}
	if n := c.nonces.take(); n != "" {
		return n, nil
	}
	return "", &acmeError{"newNonce gave no nonce"}
}

// sign makes a flattened JWS; a nil payload is a POST-as-GET.
func (c *client) sign(url, nonce string, payload interface{}) ([]byte,
	error) {
	var key string
	if c.kid == "" {
		key = `"jwk":` + c.jwk
	} else {
		k, _ := json.Marshal(c.kid)
		key = `"kid":` + string(k)
	}
	u, _ := json.Marshal(url)
	n, _ := json.Marshal(nonce)
	protected := b64u([]byte(fmt.Sprintf(`{"alg":"ES256",%s,"nonce":%s,`+
		`"url":%s}`, key, n, u)))
	body := ""
	if payload != nil {
		p, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		body = b64u(p)
	}
	digest := sha256.Sum256([]byte(protected + "." + body))
	r, s, err := ecdsa.Sign(rand.Reader, c.key, digest[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return json.Marshal(map[string]string{"protected": protected,
		"payload": body, "signature": b64u(sig)})
}

// post is a signed POST, badNonce retried; JSON answers are decoded
// into out when it is not nil.
func (c *client) post(url string, payload interface{},
	out interface{}) (*http.Response, []byte, error) {
	for try := 0; try < 10; try++ {
		nonce, err := c.nonce()
		if err != nil {
			return nil, nil, err
		}
		body, err := c.sign(url, nonce, payload)
		if err != nil {
			return nil, nil, err
		}
		resp, data, err := c.do("POST", url, body)
		if err != nil {
			return nil, nil, err
		}
		if resp.StatusCode < 400 {
			if out != nil {
				err = json.Unmarshal(data, out)
			}
			return resp, data, err
		}
		var problem struct{ Type string }
		json.Unmarshal(data, &problem)
		if problem.Type == badNonce {
			atomic.AddInt64(&c.count.badnonce, 1)
			continue
		}
		if len(data) > 200 {
			data = data[:200]
		}
		return nil, nil, &acmeError{fmt.Sprintf("%s: %d %s", url,
			resp.StatusCode, data)}
	}
	return nil, nil, &acmeError{url + ": badNonce ten times"}
}

type acmeObject struct {
	Status         string
	Authorizations []string
	Finalize       string
	Certificate    string
	Challenges     []struct {
		Type  string
		URL   string
		Token string
	}
}

type poster func(url string, payload, out interface{}) (*http.Response,
	[]byte, error)

// authzPost is post for a request to an authorization or a challenge,
// kept apart from newOrder with --exclusive on (a request at a time,
// not the whole validation: newOrder waits for no poll's sleep).
func (c *client) authzPost(url string, payload,
	out interface{}) (*http.Response, []byte, error) {
	if c.opt.exclusive {
		c.authzLock.RLock()
		defer c.authzLock.RUnlock()
	}
	return c.post(url, payload, out)
}

// pollUntil POSTs-as-GET url every --poll seconds while its status is
// one of pending.
func (c *client) pollUntil(post poster, url string,
	pending ...string) (*acmeObject, error) {
	for {
		var obj acmeObject
		if _, _, err := post(url, nil, &obj); err != nil {
			return nil, err
		}
		waiting := false
		for _, p := range pending {
			waiting = waiting || obj.Status == p
		}
		if !waiting {
			return &obj, nil
		}
		time.Sleep(time.Duration(c.opt.poll * float64(time.Second)))
	}
}

var tokens sync.Map // HTTP-01 token -> key authorization

func (c *client) authorize(name, url string) error {
	var authz acmeObject
	if _, _, err := c.authzPost(url, nil, &authz); err != nil {
		return err
	}
	if authz.Status == "valid" {
		return nil
	}
	for _, ch := range authz.Challenges {
		if ch.Type != "http-01" {
			continue
		}
		tokens.Store(ch.Token, ch.Token+"."+c.thumbprint)
		defer tokens.Delete(ch.Token)
		if _, _, err := c.authzPost(ch.URL, struct{}{}, nil); err != nil {
			return err
		}
		done, err := c.pollUntil(c.authzPost, url, "pending")
		if err != nil {
			return err
		}
		if done.Status != "valid" {
			return &acmeError{name + ": authorization " + done.Status}
		}
		return nil
	}
	return &acmeError{name + ": no http-01 challenge"}
}

func csr(name string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: name},
			DNSNames: []string{name},
		}, key)
	return b64u(der), err
}

func (c *client) issue(name string) error {
	var order acmeObject
	if c.opt.exclusive {
		c.authzLock.Lock()
	}
	resp, _, err := c.post(c.dir["newOrder"], map[string]interface{}{
		"identifiers": []map[string]string{{"type": "dns",
			"value": name}}}, &order)
	if c.opt.exclusive {
		c.authzLock.Unlock()
	}
	if err != nil {
		return err
	}
	orderURL := resp.Header.Get("Location")
	for _, url := range order.Authorizations {
		if err := c.authorize(name, url); err != nil {
			return err
		}
	}
	req, err := csr(name)
	if err != nil {
		return err
	}
	_, _, err = c.post(order.Finalize, map[string]string{"csr": req}, nil)
	if err != nil {
		return err
	}
	done, err := c.pollUntil(c.post, orderURL, "pending", "processing",
		"ready")
	if err != nil {
		return err
	}
	if done.Status != "valid" {
		return &acmeError{name + ": order " + done.Status}
	}
	_, pem, err := c.post(done.Certificate, nil, nil)
	if err != nil {
		return err
	}
	if !bytes.Contains(pem, []byte("BEGIN CERTIFICATE")) {
		return &acmeError{name + ": no certificate"}
	}
	return nil
}

func (c *client) register() error {
	_, data, err := c.do("GET", c.opt.directory, nil)
	if err != nil {
		return err
	}
	// The directory's "meta" is an object: keep only the URLs.
	var raw map[string]interface{}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	c.dir = map[string]string{}
	for k, v := range raw {
		if s, ok := v.(string); ok {
			c.dir[k] = s
		}
	}
	resp, _, err := c.post(c.dir["newAccount"],
		map[string]bool{"termsOfServiceAgreed": true}, nil)
	if err != nil {
		return err
	}
	c.kid = resp.Header.Get("Location")
	return nil
}

func (c *client) worker(names <-chan string, wg *sync.WaitGroup) {
	defer wg.Done()
	for name := range names {
		if err := c.issue(name); err != nil {
			atomic.AddInt64(&c.count.failed, 1)
			c.noteError(err)
			continue
		}
		atomic.AddInt64(&c.count.issued, 1)
		atomic.StoreInt64(&c.count.lastIssued,
			int64(time.Since(c.start)))
	}
}

// progress prints what scripts/bench/scale's before_hang() parses.
func (c *client) progress() {
	fmt.Fprintf(os.Stderr, "progress %.2f issued %d last %.2f\n",
		time.Since(c.start).Seconds(), atomic.LoadInt64(&c.count.issued),
		time.Duration(atomic.LoadInt64(&c.count.lastIssued)).Seconds())
}

func (c *client) run() time.Duration {
	names := make(chan string, c.opt.n)
	for k := c.opt.n; k >= 1; k-- {
		names <- fmt.Sprintf("c%d.ceiling.test", k)
	}
	close(names)
	var wg sync.WaitGroup
	c.start = time.Now()
	for k := 0; k < c.opt.inflight; k++ {
		wg.Add(1)
		go c.worker(names, &wg)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-finished:
			return time.Since(c.start)
		case <-tick.C:
			c.progress()
		}
	}
}

func respond(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	ka, ok := tokens.Load(token)
	if !ok {
		http.NotFound(w, r)
		return
	}
	io.WriteString(w, ka.(string))
}

func listen(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(respond))
	return nil
}

func cpuSeconds() (float64, float64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 {
		return float64(t.Sec) + float64(t.Usec)/1e6
	}
	return tv(ru.Utime), tv(ru.Stime)
}

// parseArgs takes the positional arguments and the options in any
// order, as the Python client's argparse does.
func parseArgs(argv []string) (options, error) {
	opt := options{n: 1000, inflight: 32, poll: 0.05}
	var pos []string
	for k := 0; k < len(argv); k++ {
		a := argv[k]
		if !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		if k+1 >= len(argv) {
			return opt, errors.New(a + ": a value is missing")
		}
		k++
		var err error
		switch a {
		case "-n", "--n":
			opt.n, err = strconv.Atoi(argv[k])
		case "--inflight":
			opt.inflight, err = strconv.Atoi(argv[k])
		case "--poll":
			opt.poll, err = strconv.ParseFloat(argv[k], 64)
		case "--exclusive":
			opt.exclusive = argv[k] == "on"
			if argv[k] != "on" && argv[k] != "off" {
				err = errors.New("on or off")
			}
		default:
			err = errors.New("unknown option")
		}
		if err != nil {
			return opt, fmt.Errorf("%s %s: %v", a, argv[k], err)
		}
	}
	if len(pos) != 3 {
		return opt, errors.New("DIRECTORY_URL CA_FILE HTTP_PORT expected")
	}
	opt.directory, opt.caFile = pos[0], pos[1]
	port, err := strconv.Atoi(pos[2])
	opt.httpPort = port
	if err != nil || opt.n < 1 || opt.inflight < 1 || opt.poll < 0 {
		return opt, errors.New("bad HTTP_PORT, -n, --inflight or --poll")
	}
	return opt, nil
}

func main() {
	// One core is plenty (about 3 ms of CPU per order), and a second
	// one costs more than it gives: threads handing goroutines over,
	// through futexes, on a VM where every switch is dear: side by
	// side, one took 0.64 to 0.89 of the CPU per order two took.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	opt, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "usage: ceiling-go DIRECTORY_URL CA_FILE "+
			"HTTP_PORT [-n N] [--inflight K] [--poll S] [--exclusive on|off]: %v\n", err)
		os.Exit(2)
	}
	if err := listen(opt.httpPort); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling-go:", err)
		os.Exit(1)
	}
	user0, sys0 := cpuSeconds()
	c, err := newClient(opt)
	if err == nil {
		err = c.register()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling-go:", err)
		os.Exit(1)
	}
	wall := c.run().Seconds()
	user, sys := cpuSeconds()
	out := map[string]interface{}{
		"client": "go", "n": opt.n, "wall": wall,
		"requests": c.count.requests, "badnonce": c.count.badnonce,
		"issued": c.count.issued, "failed": c.count.failed,
		"rate":     float64(c.count.issued) / wall,
		"cpu_user": user - user0, "cpu_sys": sys - sys0,
		"inflight": opt.inflight, "poll": opt.poll,
		"exclusive": opt.exclusive,
		"errors":    append([]string{}, c.errors...),
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if c.count.issued != int64(opt.n) {
		os.Exit(1)
	}
}
