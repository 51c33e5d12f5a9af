package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestFigureStatus(t *testing.T) {
	base := &Measure{1000, "commits/s"}
	cases := []struct {
		name string
		f    Figure
		want string
	}{
		{"ratio met", Figure{Measured: Measure{600, "req/s"}, Baseline: base, Target: Target{RatioAtLeast, 0.6}}, "PASS"},
		{"ratio missed", Figure{Measured: Measure{599, "req/s"}, Baseline: base, Target: Target{RatioAtLeast, 0.6}}, "BELOW"},
		{"ratio without baseline", Figure{Measured: Measure{600, "req/s"}, Target: Target{RatioAtLeast, 0.6}}, "BELOW"},
		{"ratio with zero baseline", Figure{Measured: Measure{600, "req/s"}, Baseline: &Measure{0, "x"}, Target: Target{RatioAtLeast, 0.6}}, "BELOW"},
		{"absolute met", Figure{Measured: Measure{20000, "events/s"}, Baseline: base, Target: Target{ValueAtLeast, 20000}}, "PASS"},
		{"absolute missed", Figure{Measured: Measure{19999, "events/s"}, Target: Target{ValueAtLeast, 20000}}, "BELOW"},
		{"at most met", Figure{Measured: Measure{50, "ms"}, Target: Target{ValueAtMost, 50}}, "PASS"},
		{"at most missed", Figure{Measured: Measure{50.1, "ms"}, Target: Target{ValueAtMost, 50}}, "BELOW"},
		{"information", Figure{Measured: Measure{3, "ms"}, Baseline: base}, "-"},
	}
	for _, c := range cases {
		if got := c.f.Status(); got != c.want {
			t.Errorf("%s: status %s, want %s", c.name, got, c.want)
		}
	}
	if r := (Figure{Measured: Measure{1, "x"}}).Ratio(); !math.IsNaN(r) {
		t.Errorf("ratio without baseline = %v, want NaN", r)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 0.4123: "0.412", 3.75: "3.75", 3: "3", 12.345: "12.35", 123.45: "123.5", 41237.4: "41237", 1e6: "1000000",
	} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func sampleRows() []Row {
	return Rows("command-throughput", Result{Figures: []Figure{
		{Name: "throughput", Measured: Measure{1500, "req/s"}, Baseline: &Measure{2000, "commits/s"}, Target: Target{RatioAtLeast, 0.6}},
		{Name: "p99 latency", Measured: Measure{21.5, "ms"}},
	}})
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleRows()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header and 2 rows, got:\n%s", buf.String())
	}
	for _, want := range []string{"command-throughput", "throughput", "1500 req/s", "2000 commits/s", "0.75x", ">= 0.6x", "PASS"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if f := strings.Fields(lines[2]); f[len(f)-1] != "-" || !strings.Contains(lines[2], "21.50 ms") {
		t.Errorf("information row %q: want no status and the value", lines[2])
	}
}

func TestWriteJSONLines(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSONLines(&buf, sampleRows()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got:\n%s", buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first["ratio"] != 0.75 || first["status"] != "PASS" || first["baseline_unit"] != "commits/s" || first["target"] != ">= 0.6x" {
		t.Errorf("first line %v", first)
	}
	if _, ok := second["ratio"]; ok {
		t.Errorf("second line has a ratio without a baseline: %v", second)
	}
}
