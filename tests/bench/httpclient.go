package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// newHTTPClient returns one client for all benchmark clients, its Transport sized so that each of
// conns concurrent clients keeps its own keep-alive connection: without that, Go keeps only 2 idle
// connections per host and the other clients would pay a TCP handshake per request.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     90 * time.Second,
			// Answers are small; gzip would only cost CPU on both sides of a loopback connection.
			DisableCompression: true,
		},
		// Redirects would hide what the server actually answered.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// apiResponse is an answer read completely (so the connection goes back to the pool).
type apiResponse struct {
	Status int
	Header http.Header
	Body   []byte
	// Cookies are those the answer set.
	Cookies []*http.Cookie
}

// maxBody bounds how much of an answer is read; API answers here are a few hundred bytes.
const maxBody = 1 << 20

// doJSON sends body (nil for none) as JSON with the given headers and reads the whole answer.
func doJSON(ctx context.Context, client *http.Client, method, url string, body []byte, header http.Header) (apiResponse, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return apiResponse{}, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return apiResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return apiResponse{}, fmt.Errorf("%s %s: read answer: %w", method, req.URL.Path, err)
	}
	// Drain anything past the limit so the keep-alive connection can be reused.
	_, _ = io.Copy(io.Discard, resp.Body)
	return apiResponse{Status: resp.StatusCode, Header: resp.Header, Body: b, Cookies: resp.Cookies()}, nil
}

// unexpected describes an answer that was not the one expected, with the evidence needed to chase it
// in the server's log: status, request id and (the start of) the body.
func unexpected(method, path string, r apiResponse) error {
	body := strings.TrimSpace(string(r.Body))
	if len(body) > 2000 {
		body = body[:2000] + "..."
	}
	return fmt.Errorf("%s %s: %d %s (X-Request-Id %q): %s", method, path, r.Status, http.StatusText(r.Status),
		r.Header.Get("X-Request-Id"), body)
}

// mustJSON encodes v; the values encoded here are the harness's own plain structs.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}
