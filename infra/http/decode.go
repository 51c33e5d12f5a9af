package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/gin-gonic/gin"
)

// maxBodyBytes is the contract's limit on a request body (API.md, Conventions).
const maxBodyBytes = 1 << 20

// BodyLimit caps every request body at 1 MiB, whether or not the route reads it. A declared
// Content-Length over the limit is refused before a byte is read; a body of unknown length (chunked)
// is read here, up to the limit, so that it too is refused whatever the route does with it.
func BodyLimit() gin.HandlerFunc {
	return func(c *gin.Context) {
		r := c.Request
		if r.ContentLength > maxBodyBytes {
			PayloadTooLarge(c)
			return
		}
		if r.Body == nil || r.Body == http.NoBody {
			return
		}
		r.Body = http.MaxBytesReader(c.Writer, r.Body, maxBodyBytes)
		if r.ContentLength >= 0 {
			return
		}
		body, ok := readAll(c, r.Body)
		if !ok {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
}

// ReadBody returns the raw request body (at most 1 MiB), for routes that need its exact bytes, such
// as a webhook whose signature covers them. On failure it has answered and returns false.
func ReadBody(c *gin.Context) ([]byte, bool) {
	if c.Request.ContentLength > maxBodyBytes {
		PayloadTooLarge(c)
		return nil, false
	}
	if c.Request.Body == nil {
		return nil, true
	}
	return readAll(c, http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes))
}

func readAll(c *gin.Context, body io.Reader) ([]byte, bool) {
	b, err := io.ReadAll(body)
	if err != nil {
		writeReadError(c, err)
		return nil, false
	}
	return b, true
}

// writeReadError tells an oversized body and a client that left (both answered by WriteError) from a
// body that broke off, which is the client's fault, not ours.
func writeReadError(c *gin.Context, err error) {
	if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge || c.Request.Context().Err() != nil {
		WriteError(c, err)
		return
	}
	BadRequest(c, "the request body could not be read")
}

// DecodeJSON decodes the request's JSON body into dst, strictly: the body must be declared as
// application/json, hold exactly one JSON value, name only fields dst has and fit in 1 MiB. On failure
// it has answered with a problem (400, 413 or 415) and returns false; the handler just returns.
func DecodeJSON(c *gin.Context, dst any) bool {
	if detail := checkJSONContentType(c.GetHeader("Content-Type")); detail != "" {
		UnsupportedMediaType(c, detail)
		return false
	}
	if c.Request.ContentLength > maxBodyBytes {
		PayloadTooLarge(c)
		return false
	}
	body := c.Request.Body
	if body == nil {
		body = http.NoBody
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		writeDecodeError(c, err)
		return false
	}
	// A second value after the first is a client bug that would otherwise be silently ignored.
	if _, err := dec.Token(); err != io.EOF {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			PayloadTooLarge(c)
			return false
		}
		BadRequest(c, "the request body must hold a single JSON value, but more data follows it")
		return false
	}
	return true
}

// checkJSONContentType returns why ct is not JSON, or "" when it is. JSON is UTF-8 (RFC 8259), so a
// charset parameter naming anything else is refused rather than misread.
func checkJSONContentType(ct string) string {
	const want = "the request body must be JSON, sent with Content-Type: application/json"
	if ct == "" {
		return want
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil || mediaType != "application/json" {
		return want
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return "JSON request bodies must be UTF-8, not " + cs
	}
	return ""
}

func writeDecodeError(c *gin.Context, err error) {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		BadRequest(c, "the request body is empty; a JSON value was expected")
	case errors.As(err, &syntaxErr):
		BadRequest(c, fmt.Sprintf("the request body is not valid JSON (at byte %d): %s",
			syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: ")))
	case errors.Is(err, io.ErrUnexpectedEOF):
		BadRequest(c, "the request body is not valid JSON: it ends too early")
	case errors.As(err, &typeErr):
		BadRequest(c, typeErrorDetail(typeErr))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for this one; its message is the only signal.
		BadRequest(c, "the request body has an "+strings.TrimPrefix(err.Error(), "json: ")+
			", which this endpoint does not accept")
	default:
		var invalid *json.InvalidUnmarshalError
		if errors.As(err, &invalid) {
			WriteError(c, err) // the handler passed a bad dst: our bug, a 500
			return
		}
		writeReadError(c, err)
	}
}

func typeErrorDetail(e *json.UnmarshalTypeError) string {
	got := e.Value
	if got == "bool" {
		got = "boolean" // encoding/json speaks Go here; the client wrote JSON
	}
	if e.Field == "" {
		return fmt.Sprintf("the request body must be a JSON %s, not %s", jsonKind(e.Type), got)
	}
	return fmt.Sprintf("field %q must be %s, not %s", e.Field, withArticle(jsonKind(e.Type)), got)
}

// jsonKind names a Go type the way a client writing JSON thinks of it.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "value"
}

func withArticle(kind string) string {
	switch kind {
	case "integer", "array", "object":
		return "an " + kind
	}
	return "a " + kind
}
