package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func metricsEngine(reg *prometheus.Registry) *gin.Engine {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.Use(NewMetrics(reg).Middleware())
	e.NoRoute(NoRoute())
	e.NoMethod(NoMethod())
	e.GET("/users/:id", func(c *gin.Context) { c.Status(http.StatusOK) })
	e.POST("/users", func(c *gin.Context) { c.Status(http.StatusCreated) })
	e.GET("/metrics", MetricsHandler(reg))
	return e
}

// series returns each series of the named family as "label=value,..." → sample count or value.
func series(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			out[labels(m)] = value(f, m)
		}
	}
	return out
}

func labels(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

func value(f *dto.MetricFamily, m *dto.Metric) float64 {
	if f.GetType() == dto.MetricType_HISTOGRAM {
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetCounter().GetValue()
}

func TestMetricsLabelsByRouteTemplate(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := metricsEngine(reg)
	for _, id := range []string{"1", "2", "3"} {
		serve(e, httptest.NewRequest(http.MethodGet, "/users/"+id, nil))
	}
	serve(e, httptest.NewRequest(http.MethodPost, "/users", nil))
	serve(e, httptest.NewRequest(http.MethodGet, "/random/path/1", nil))
	serve(e, httptest.NewRequest(http.MethodGet, "/random/path/2", nil))
	serve(e, httptest.NewRequest(http.MethodDelete, "/users/1", nil))
	serve(e, httptest.NewRequest("BREW", "/users/1", nil))

	wantCounts := map[string]float64{
		"method=GET,route=/users/:id,status=200":   3,
		"method=POST,route=/users,status=201":      1,
		"method=GET,route=unmatched,status=404":    2,
		"method=DELETE,route=unmatched,status=405": 1,
		"method=OTHER,route=unmatched,status=405":  1,
	}
	got := series(t, reg, "http_requests_total")
	if len(got) != len(wantCounts) {
		t.Errorf("series %v, want %v", got, wantCounts)
	}
	for k, v := range wantCounts {
		if got[k] != v {
			t.Errorf("http_requests_total{%s} = %v, want %v", k, got[k], v)
		}
	}
	durations := series(t, reg, "http_request_duration_seconds")
	if durations["method=GET,route=/users/:id"] != 3 || durations["method=GET,route=unmatched"] != 2 {
		t.Errorf("histogram counts %v", durations)
	}
}

func TestMetricsHandlerServesText(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := metricsEngine(reg)
	serve(e, httptest.NewRequest(http.MethodGet, "/users/1", nil))
	w := serve(e, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("got %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	body := w.Body.String()
	for _, want := range []string{
		`http_requests_total{method="GET",route="/users/:id",status="200"} 1`,
		`http_request_duration_seconds_bucket{method="GET",route="/users/:id",le="0.001"}`,
		"# TYPE http_request_duration_seconds histogram",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics output lacks %q:\n%s", want, body)
		}
	}
}

func TestNewMetricsTwiceSharesCollectors(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, b := metricsEngine(reg), metricsEngine(reg)
	serve(a, httptest.NewRequest(http.MethodPost, "/users", nil))
	serve(b, httptest.NewRequest(http.MethodPost, "/users", nil))
	if got := series(t, reg, "http_requests_total")["method=POST,route=/users,status=201"]; got != 2 {
		t.Errorf("count %v, want 2 across both engines", got)
	}
}

func TestNewMetricsClashPanics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "http_requests_total", Help: "other"}))
	defer func() {
		if recover() == nil {
			t.Error("a clashing metric did not panic")
		}
	}()
	NewMetrics(reg)
}

// An upgraded WebSocket is counted as a 101 request, and its lifetime is kept out of the request
// duration histogram; a refused upgrade is an ordinary request.
func TestMetricsCountWebSocketUpgradesWithoutDuration(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := gin.New()
	e.Use(NewMetrics(reg).Middleware())
	upgrader := websocket.Upgrader{}
	e.GET("/ws", func(c *gin.Context) {
		if c.Query("refuse") != "" {
			c.Status(http.StatusForbidden)
			return
		}
		conn, err := upgrader.Upgrade(c.Writer, c.Request, nil)
		if err != nil {
			return
		}
		conn.Close()
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The server closed its side; reading observes it, so the handler has returned.
	_, _, _ = conn.ReadMessage()
	conn.Close()
	if _, resp, err := websocket.DefaultDialer.Dial(url+"?refuse=1", nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused upgrade: %v %v", resp, err)
	}
	want := map[string]float64{
		"method=GET,route=/ws,status=101": 1,
		"method=GET,route=/ws,status=403": 1,
	}
	// The upgraded handler's metrics are recorded after the hijacked connection closes; wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := series(t, reg, "http_requests_total")
		if got["method=GET,route=/ws,status=101"] == 1 && got["method=GET,route=/ws,status=403"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("http_requests_total = %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond) // the handler finishes on the server's goroutine, bounded above
	}
	if d := series(t, reg, "http_request_duration_seconds"); d["method=GET,route=/ws"] != 1 {
		t.Fatalf("duration observations for /ws = %v, want only the refused request's", d)
	}
}
