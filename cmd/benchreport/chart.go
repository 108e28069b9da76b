package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// point is one x/y pair of a chart series.
type point struct{ X, Y float64 }

// panel is one small chart: a line over points, or bars when Bars is set.
type panel struct {
	Title, XLabel, YLabel string
	Points                []point
	Bars                  []string // bar labels, one per point (X ignored)
	Color                 string
}

const (
	panelW, panelH = 320.0, 240.0
	padL, padR     = 58.0, 14.0
	padT, padB     = 34.0, 44.0
)

// chartSVG lays the panels out side by side in one SVG image.
func chartSVG(title string, panels []panel) string {
	w := panelW * float64(len(panels))
	h := panelH + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans, Arial, sans-serif">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="15" text-anchor="middle" font-weight="bold">%s</text>`+"\n", w/2, esc(title))
	for i, p := range panels {
		drawPanel(&b, float64(i)*panelW, 30, p)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func drawPanel(b *strings.Builder, x0, y0 float64, p panel) {
	if p.Color == "" {
		p.Color = "#1f77b4"
	}
	pw, ph := panelW-padL-padR, panelH-padT-padB
	ox, oy := x0+padL, y0+padT+ph // origin (bottom left of the plot area)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+panelW/2, y0+18, esc(p.Title))
	if len(p.Points) == 0 {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">no data</text>`+"\n", x0+panelW/2, y0+panelH/2)
		return
	}
	var xmax, ymax float64
	for _, pt := range p.Points {
		xmax, ymax = math.Max(xmax, pt.X), math.Max(ymax, pt.Y)
	}
	ymax = niceCeil(ymax)
	if ymax == 0 {
		ymax = 1
	}
	// Axes and y grid.
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", ox, oy, ox+pw, oy)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", ox, oy, ox, oy-ph)
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		y := oy - ph*float64(i)/4
		if i > 0 {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", ox, y, ox+pw, y)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="end">%s</text>`+"\n", ox-4, y+3, esc(tick(v)))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
		x0+12, oy-ph/2, x0+12, oy-ph/2, esc(p.YLabel))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", ox+pw/2, oy+34, esc(p.XLabel))

	if len(p.Bars) > 0 {
		n := float64(len(p.Points))
		slot := pw / n
		for i, pt := range p.Points {
			bh := ph * pt.Y / ymax
			x := ox + slot*float64(i) + slot*0.2
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, oy-bh, slot*0.6, bh, p.Color)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", x+slot*0.3, oy-bh-4, esc(num(pt.Y)))
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", x+slot*0.3, oy+14, esc(p.Bars[i]))
		}
		return
	}
	xmax = niceCeil(xmax)
	for i := 0; i <= 4; i++ {
		v := xmax * float64(i) / 4
		x := ox + pw*float64(i)/4
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", x, oy+14, esc(tick(v)))
	}
	var path []string
	for _, pt := range p.Points {
		x, y := ox+pw*pt.X/xmax, oy-ph*pt.Y/ymax
		path = append(path, fmt.Sprintf("%.1f,%.1f", x, y))
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(path, " "), p.Color)
	for _, pt := range p.Points {
		x, y := ox+pw*pt.X/xmax, oy-ph*pt.Y/ymax
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x, y, p.Color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%s</text>`+"\n", x, y-7, esc(num(pt.Y)))
	}
}

// tick formats an axis value: whole numbers without decimals.
func tick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return num(v) // with thousands separators, or decimals for fractions
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// scalingPanels are the scaling chart's panels from a run.
func scalingPanels(run *Run) []panel {
	var timeP, memP []point
	for _, r := range scalingRows(run) {
		ev, _ := r.Get("events")
		rate, _ := r.Get("recompute_events/s")
		if rate > 0 {
			timeP = append(timeP, point{ev / 1e6, ev / rate})
		}
		if mem, ok := r.Get("peak_rss_MB"); ok {
			memP = append(memP, point{ev / 1e6, mem})
		}
	}
	var speedP []point
	var labels []string
	for _, n := range []int{1, 2} {
		if r := run.Find(fmt.Sprintf("BenchmarkSpeedInstances/instances=%d", n)); r != nil {
			if v, ok := r.Get("events/s"); ok {
				speedP = append(speedP, point{float64(n), v})
				labels = append(labels, fmt.Sprintf("%d instance%s", n, map[bool]string{true: "s"}[n > 1]))
			}
		}
	}
	return []panel{
		{Title: "Batch recompute time", XLabel: "events (millions)", YLabel: "seconds", Points: timeP},
		{Title: "Batch recompute peak RSS", XLabel: "events (millions)", YLabel: "MB", Points: memP, Color: "#d62728"},
		{Title: "Speed layer throughput", XLabel: "instances in the group", YLabel: "events/s", Points: speedP, Bars: labels, Color: "#2ca02c"},
	}
}
