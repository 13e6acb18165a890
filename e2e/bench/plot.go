package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// A small SVG writer for the scale benchmark's curves: one panel a
// quantity, each with one or more series of values against the number of
// pods. (A plotting library would bring fonts, PDF and LaTeX modules into
// pier's go.mod for this one chart.)

// plotSeries is one curve of a panel.
type plotSeries struct {
	label  string
	values []float64
}

// plotPanel is one small chart.
type plotPanel struct {
	title, unit string
	series      []plotSeries
	target      float64 // a dashed horizontal line, 0 for none
}

// Panel geometry, in SVG user units (pixels).
const (
	panelW, panelH       = 330, 230
	marginL, marginR     = 58, 14
	marginT, marginB     = 30, 40
	plotCols             = 3
	headerH              = 48
	plotFont             = "DejaVu Sans, Helvetica, Arial, sans-serif"
	axisColor, gridColor = "#444", "#ddd"
)

// seriesColors are told apart by most colour-blind readers.
var seriesColors = []string{"#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00"}

// writeScalePlot draws the scale benchmark's figures to path as SVG.
func writeScalePlot(path, target string, points []scalePoint) error {
	pods := make([]float64, len(points))
	for i, p := range points {
		pods[i] = float64(p.pods)
	}
	col := func(f func(scalePoint) float64) []float64 {
		v := make([]float64, len(points))
		for i, p := range points {
			v[i] = f(p)
		}
		return v
	}
	ms := func(name string) []float64 {
		return col(func(p scalePoint) float64 {
			return float64(percentile(p.latency[name], 50)) / float64(time.Millisecond)
		})
	}
	panels := []plotPanel{
		{title: "time to start / remove all pods", unit: "s", series: []plotSeries{
			{"start", col(func(p scalePoint) float64 { return p.start.Seconds() })},
			{"remove", col(func(p scalePoint) float64 { return p.remove.Seconds() })}}},
		{title: "memory per pod: " + memWhat(points), unit: "KiB", series: []plotSeries{{"", col(scalePoint.memPerPodKB)}}},
	}
	if points[0].rssKB != 0 {
		panels = append(panels, plotPanel{title: "pierd RSS", unit: "MiB", series: []plotSeries{{"", col(func(p scalePoint) float64 { return float64(p.rssKB) / 1024 })}}})
	}
	if points[0].goroutines != 0 {
		panels = append(panels, plotPanel{title: "pierd goroutines", series: []plotSeries{{"", col(func(p scalePoint) float64 { return float64(p.goroutines) })}}})
	}
	panels = append(panels,
		plotPanel{title: "crictl latency, median", unit: "ms", series: []plotSeries{
			{"ps", ms("crictl ps")}, {"pods", ms("crictl pods")}, {"stats -s 0", ms("crictl stats")}, {"version (start-up)", ms("crictl version")}}},
		plotPanel{title: "stats through a Go client, median", unit: "ms", target: 100, series: []plotSeries{
			{"ListContainerStats", ms("ListContainerStats")}, {"ListPodSandboxStats", ms("ListPodSandboxStats")}}},
	)

	var busies []string
	for _, p := range points {
		busies = append(busies, fmt.Sprintf("%.0f%%", p.nodeBusy*100))
	}
	busy := strings.Join(busies, " / ")
	rows := (len(panels) + plotCols - 1) / plotCols
	width, height := plotCols*panelW, headerH+rows*panelH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">`+"\n", width, height, width, height, plotFont)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold" text-anchor="middle">%s</text>`+"\n", width/2,
		esc(fmt.Sprintf("%s at scale: pods of %d busybox containers, started by %d concurrent clients", target, scaleContainers, scaleClients)))
	fmt.Fprintf(&b, `<text x="%d" y="40" font-size="11" fill="#555" text-anchor="middle">%s</text>`+"\n", width/2,
		esc(fmt.Sprintf("measured %s on %s, %d CPUs; medians of %d calls; node CPU busy with others' work: %s", time.Now().UTC().Format("2006-01-02 15:04 MST"),
			cpuModel(), runtime.NumCPU(), scaleCalls, busy)))
	for i, p := range panels {
		x0, y0 := (i%plotCols)*panelW, headerH+(i/plotCols)*panelH
		drawPanel(&b, x0, y0, pods, p)
	}
	b.WriteString("</svg>\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// drawPanel draws p with its top left corner at x0, y0.
func drawPanel(b *strings.Builder, x0, y0 int, xs []float64, p plotPanel) {
	left, top := float64(x0+marginL), float64(y0+marginT)
	w, h := float64(panelW-marginL-marginR), float64(panelH-marginT-marginB)
	xMax := niceCeil(xs[len(xs)-1])
	yMax := p.target * 1.1
	for _, s := range p.series {
		for _, v := range s.values {
			yMax = max(yMax, v)
		}
	}
	yMax *= 1.12 // room above the highest point for its label
	yStep := niceStep(yMax / 4)
	if yStep == 0 {
		yStep = 1
	}
	yMax = math.Ceil(yMax/yStep) * yStep
	px := func(x float64) float64 { return left + x/xMax*w }
	py := func(y float64) float64 { return top + h - y/yMax*h }

	title := p.title
	if p.unit != "" {
		title += " (" + p.unit + ")"
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="12" font-weight="bold" text-anchor="middle">%s</text>`+"\n", left+w/2, y0+18, esc(title))
	// Grid and y ticks.
	for i := 0; i <= int(math.Round(yMax/yStep)); i++ {
		y := float64(i) * yStep
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", left, py(y), left+w, py(y), gridColor)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="end" fill="%s">%s</text>`+"\n", left-5, py(y)+3.5, axisColor, fmtTick(y))
	}
	// X ticks at the measured sizes.
	// (0 is labelled only when it does not crowd the first size.)
	for i, x := range append([]float64{0}, xs...) {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", px(x), top+h, px(x), top+h+4, axisColor)
		if i > 0 || xs[0] > 0.15*xMax {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="%s">%s</text>`+"\n", px(x), top+h+15, axisColor, fmtTick(x))
		}
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="%s">pods</text>`+"\n", left+w/2, top+h+29, axisColor)
	// Axes.
	fmt.Fprintf(b, `<polyline points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="none" stroke="%s" stroke-width="1"/>`+"\n", left, top, left, top+h, left+w, top+h, axisColor)
	if p.target > 0 {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-width="1" stroke-dasharray="5,4"/>`+"\n", left, py(p.target), left+w, py(p.target))
		// Labelled left of the middle, where the curves (rising) are
		// lowest, and right of the legend.
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#c00">target %s</text>`+"\n", left+w*0.4, py(p.target)-4, fmtTick(p.target))
	}
	// Series, with a legend at the top left when there are several.
	for i, s := range p.series {
		color := seriesColors[i%len(seriesColors)]
		var pts []string
		for j, v := range s.values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(v)))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
		for j, v := range s.values {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s</title></circle>`+"\n", px(xs[j]), py(v), color, esc(fmt.Sprintf("%s %g pods: %s", s.label, xs[j], fmtValue(v))))
		}
		if len(p.series) == 1 {
			// Label the points with their values.
			for j, v := range s.values {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="%s">%s</text>`+"\n", px(xs[j]), py(v)-7, color, fmtValue(v))
			}
		} else {
			ly := top + 4 + float64(i)*13
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", left+8, ly, left+24, ly, color)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" fill="%s">%s</text>`+"\n", left+28, ly+3.5, color, esc(s.label))
		}
	}
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// niceCeil rounds x up to a multiple of a nice step.
func niceCeil(x float64) float64 {
	s := niceStep(x / 5)
	if s == 0 {
		return 1
	}
	return math.Ceil(x/s) * s
}

func fmtTick(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// fmtValue prints v with three significant digits at most.
func fmtValue(v float64) string {
	switch {
	case v == math.Trunc(v) || v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func esc(s string) string { return html.EscapeString(s) }

// cpuModel is the first CPU's model name, from /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "an unknown CPU"
}
