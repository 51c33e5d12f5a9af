package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Measure is one number with its unit.
type Measure struct {
	Value float64
	Unit  string
}

func (m Measure) String() string { return formatValue(m.Value) + " " + m.Unit }

// TargetKind says what a figure is judged against.
type TargetKind int

const (
	// NoTarget marks a figure printed for information only.
	NoTarget TargetKind = iota
	// RatioAtLeast judges measured/baseline, the usual case: both are taken in the same run on the same
	// machine, so the ratio travels between machines where the absolute numbers do not.
	RatioAtLeast
	// ValueAtLeast judges the measured value itself (for figures DESIGN.md states absolutely).
	ValueAtLeast
	// ValueAtMost judges the measured value itself, for costs such as latencies.
	ValueAtMost
)

// Target is the bar a figure is held to.
type Target struct {
	Kind  TargetKind
	Value float64
}

func (t Target) String(unit string) string {
	switch t.Kind {
	case RatioAtLeast:
		return ">= " + formatValue(t.Value) + "x"
	case ValueAtLeast:
		return ">= " + formatValue(t.Value) + " " + unit
	case ValueAtMost:
		return "<= " + formatValue(t.Value) + " " + unit
	default:
		return "-"
	}
}

// Figure is one line of the report.
type Figure struct {
	// Name says what was measured, e.g. "requests" or "p99 latency"; the benchmark's name is added.
	Name     string
	Measured Measure
	// Baseline is the same quantity measured on the raw path in the same run; nil when there is none.
	Baseline *Measure
	Target   Target
}

// Ratio is measured/baseline, or NaN without a usable baseline.
func (f Figure) Ratio() float64 {
	if f.Baseline == nil || f.Baseline.Value == 0 {
		return math.NaN()
	}
	return f.Measured.Value / f.Baseline.Value
}

// Status is "PASS" or "BELOW" for a figure with a target, "-" otherwise. A figure whose target needs a
// ratio but has no baseline is BELOW: it cannot show that it meets the target.
func (f Figure) Status() string {
	var ok bool
	switch f.Target.Kind {
	case RatioAtLeast:
		r := f.Ratio()
		ok = !math.IsNaN(r) && r >= f.Target.Value
	case ValueAtLeast:
		ok = f.Measured.Value >= f.Target.Value
	case ValueAtMost:
		ok = f.Measured.Value <= f.Target.Value
	default:
		return "-"
	}
	if ok {
		return "PASS"
	}
	return "BELOW"
}

// Result is what one benchmark run produced.
type Result struct {
	Figures []Figure
}

// Row is a figure as reported, tied to its benchmark; it is also the JSON line.
type Row struct {
	Benchmark    string   `json:"benchmark"`
	Figure       string   `json:"figure"`
	Value        float64  `json:"value"`
	Unit         string   `json:"unit"`
	Baseline     *float64 `json:"baseline,omitempty"`
	BaselineUnit string   `json:"baseline_unit,omitempty"`
	Ratio        *float64 `json:"ratio,omitempty"`
	Target       string   `json:"target"`
	Status       string   `json:"status"`
}

// Rows flattens a benchmark's result into report rows.
func Rows(benchmark string, r Result) []Row {
	rows := make([]Row, 0, len(r.Figures))
	for _, f := range r.Figures {
		row := Row{
			Benchmark: benchmark,
			Figure:    f.Name,
			Value:     f.Measured.Value,
			Unit:      f.Measured.Unit,
			Target:    f.Target.String(f.Measured.Unit),
			Status:    f.Status(),
		}
		if f.Baseline != nil {
			v := f.Baseline.Value
			row.Baseline, row.BaselineUnit = &v, f.Baseline.Unit
		}
		if r := f.Ratio(); !math.IsNaN(r) {
			row.Ratio = &r
		}
		rows = append(rows, row)
	}
	return rows
}

// WriteTable prints rows as an aligned plain-text table.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tFIGURE\tMEASURED\tBASELINE\tRATIO\tTARGET\tSTATUS")
	for _, r := range rows {
		baseline, ratio := "-", "-"
		if r.Baseline != nil {
			baseline = Measure{*r.Baseline, r.BaselineUnit}.String()
		}
		if r.Ratio != nil {
			ratio = strconv.FormatFloat(*r.Ratio, 'f', 2, 64) + "x"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Benchmark, r.Figure,
			Measure{r.Value, r.Unit}.String(), baseline, ratio, r.Target, r.Status)
	}
	return tw.Flush()
}

// WriteJSONLines prints one JSON object per row.
func WriteJSONLines(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	// Keep targets such as ">= 0.6x" readable instead of "\u003e= 0.6x".
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// formatValue keeps three significant digits for small numbers and drops the noise of large ones, so
// that "0.412", "3.75" and "41237" all read at a glance.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case a >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s := strconv.FormatFloat(v, 'f', 3, 64)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s
	}
}
