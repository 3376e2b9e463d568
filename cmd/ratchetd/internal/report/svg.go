package report

import (
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
)

// Chart geometry (SVG user units).
const (
	chartW, chartH     = 760, 280
	padL, padR         = 70, 20
	padT, padB         = 30, 45
	plotW              = chartW - padL - padR
	plotH              = chartH - padT - padB
	maxPointsPerSeries = 800
)

type point struct{ x, y float64 }

type series struct {
	name   string
	color  string
	points []point
}

// lineChart draws series on linear axes from zero.
func lineChart(title, xLabel, yLabel string, ss []series) template.HTML {
	var xMax, yMax float64
	for _, s := range ss {
		for _, p := range s.points {
			xMax, yMax = math.Max(xMax, p.x), math.Max(yMax, p.y)
		}
	}
	// The x axis ends at the last point (a run's length), with round
	// ticks inside it; the y axis goes up to a round value.
	xTicks, _ := niceTicks(xMax)
	if xMax <= 0 {
		xMax = 1
	}
	xTicks = slices.DeleteFunc(xTicks, func(t float64) bool { return t > xMax*1.0001 })
	yTicks, yMax := niceTicks(yMax)
	sx := func(x float64) float64 { return padL + x/xMax*plotW }
	sy := func(y float64) float64 { return padT + plotH - y/yMax*plotH }

	var b strings.Builder
	open(&b, title)
	for _, t := range yTicks {
		fmt.Fprintf(&b, `<line stroke="#e6e6e6" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, padL+plotW, sy(t), sy(t))
		fmt.Fprintf(&b, `<text font-size="11" fill="#444" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, sy(t)+4, short(t))
	}
	for _, t := range xTicks {
		fmt.Fprintf(&b, `<text font-size="11" fill="#444" x="%.1f" y="%d" text-anchor="middle">%s</text>`, sx(t), padT+plotH+16, short(t))
	}
	axes(&b, xLabel, yLabel)
	for i, s := range ss {
		pts := thin(s.points)
		if len(pts) == 0 {
			continue
		}
		var path strings.Builder
		for j, p := range pts {
			cmd := 'L'
			if j == 0 {
				cmd = 'M'
			}
			fmt.Fprintf(&path, "%c%.1f %.1f", cmd, sx(p.x), sy(p.y))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.8"/>`, path.String(), s.color)
		if len(pts) == 1 {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, sx(pts[0].x), sy(pts[0].y), s.color)
		}
		legend(&b, i, s)
	}
	b.WriteString("</svg>")
	return template.HTML(b.String())
}

// bar is one bar of a histogram on a logarithmic x axis.
type bar struct {
	lo, hi float64 // x range (> 0)
	count  float64
}

// marker is a labelled vertical line (a percentile).
type marker struct {
	x     float64
	label string
}

// histogramChart draws bars over a log10 x axis, with markers.
func histogramChart(title, xLabel, yLabel string, bars []bar, marks []marker) template.HTML {
	var b strings.Builder
	open(&b, title)
	if len(bars) == 0 {
		fmt.Fprintf(&b, `<text font-size="11" fill="#444" x="%d" y="%d" text-anchor="middle">no data</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	lo, hi := bars[0].lo, bars[len(bars)-1].hi
	var yMax float64
	for _, br := range bars {
		yMax = math.Max(yMax, br.count)
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	yTicks, yMax := niceTicks(yMax)
	sx := func(x float64) float64 { return padL + (math.Log10(x)-dLo)/(dHi-dLo)*plotW }
	sy := func(y float64) float64 { return padT + plotH - y/yMax*plotH }
	for _, t := range yTicks {
		fmt.Fprintf(&b, `<line stroke="#e6e6e6" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, padL+plotW, sy(t), sy(t))
		fmt.Fprintf(&b, `<text font-size="11" fill="#444" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, sy(t)+4, short(t))
	}
	for d := dLo; d <= dHi; d++ {
		x := math.Pow(10, d)
		fmt.Fprintf(&b, `<line stroke="#e6e6e6" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>`, sx(x), sx(x), padT, padT+plotH)
		fmt.Fprintf(&b, `<text font-size="11" fill="#444" x="%.1f" y="%d" text-anchor="middle">%s</text>`, sx(x), padT+plotH+16, short(x))
	}
	axes(&b, xLabel, yLabel)
	for _, br := range bars {
		x0, x1 := sx(br.lo), sx(br.hi)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4e79a7"><title>%s–%s: %.0f</title></rect>`,
			x0, sy(br.count), math.Max(x1-x0-0.5, 0.8), sy(0)-sy(br.count), short(br.lo), short(br.hi), br.count)
	}
	for i, m := range marks {
		if m.x <= 0 {
			continue
		}
		x := sx(m.x)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e15759" stroke-dasharray="4 3"/>`, x, x, padT, padT+plotH)
		fmt.Fprintf(&b, `<text font-size="11" fill="#e15759" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, padT-4-10*(i%2), template.HTMLEscapeString(m.label))
	}
	b.WriteString("</svg>")
	return template.HTML(b.String())
}

func open(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" font-family="system-ui, sans-serif" role="img" aria-label="%s">`, chartW, chartH+20, template.HTMLEscapeString(title))
}

func axes(b *strings.Builder, xLabel, yLabel string) {
	fmt.Fprintf(b, `<line stroke="#555" x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, padL+plotW, padT+plotH, padT+plotH)
	fmt.Fprintf(b, `<line stroke="#555" x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, padL, padT, padT+plotH)
	fmt.Fprintf(b, `<text font-size="12" fill="#222" x="%d" y="%d" text-anchor="middle">%s</text>`, padL+plotW/2, padT+plotH+36, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(b, `<text font-size="12" fill="#222" transform="translate(16 %d) rotate(-90)" text-anchor="middle">%s</text>`, padT+plotH/2, template.HTMLEscapeString(yLabel))
}

func legend(b *strings.Builder, i int, s series) {
	x := padL + 10 + i*130
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/>`, x, chartH+8, s.color)
	fmt.Fprintf(b, `<text font-size="11" fill="#444" x="%d" y="%d">%s</text>`, x+16, chartH+13, template.HTMLEscapeString(s.name))
}

// thin keeps at most maxPointsPerSeries points (every k-th), so a long
// run's chart stays small.
func thin(pts []point) []point {
	if len(pts) <= maxPointsPerSeries {
		return pts
	}
	k := (len(pts) + maxPointsPerSeries - 1) / maxPointsPerSeries
	var out []point
	for i := 0; i < len(pts); i += k {
		out = append(out, pts[i])
	}
	return append(out, pts[len(pts)-1])
}

// niceTicks returns about five round tick values from 0 and the axis top.
func niceTicks(max float64) ([]float64, float64) {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return []float64{0, 1}, 1
	}
	raw := max / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	top := math.Ceil(max/step) * step
	var ticks []float64
	for t := 0.0; t <= top+step/2; t += step {
		ticks = append(ticks, t)
	}
	return ticks, top
}

// short formats a tick value: 1.5k, 20, 0.25, 0.001.
func short(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trim(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case a >= 1e4:
		return trim(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case a >= 10 || a == 0:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return trim(fmt.Sprintf("%.2f", v))
	default:
		return trim(fmt.Sprintf("%.3g", v))
	}
}

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
