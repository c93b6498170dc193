package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// report prints a scenario's rounds: for each metric, every side's value
// per round and their ratios, then the medians; a ratio's median is that
// of its per-round ratios, followed by their min..max.
func report(w io.Writer, r result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for m, metric := range r.sc.metrics {
		head := []string{metric}
		head = append(head, r.sides...)
		for _, q := range r.sc.ratios {
			head = append(head, r.ratioName(q))
		}
		row(tw, head...)
		for i := range r.vals[0][m] {
			cells := []string{"round " + strconv.Itoa(i+1)}
			for s := range r.sides {
				cells = append(cells, num(r.vals[s][m][i]))
			}
			for _, q := range r.sc.ratios {
				cells = append(cells, num(r.ratioRounds(q, m)[i]))
			}
			row(tw, cells...)
		}
		cells := []string{"median"}
		for s := range r.sides {
			cells = append(cells, num(median(r.vals[s][m])))
		}
		for _, q := range r.sc.ratios {
			cells = append(cells, spread(r.ratioRounds(q, m)))
		}
		row(tw, cells...)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// summary prints every ratio of every scenario.
func summary(w io.Writer, results []result) {
	fmt.Fprintln(w, "== summary: ratios, median of the per-round ratios (min..max over rounds)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row(tw, "scenario", "measure", "ratio", "median (min..max)")
	for _, r := range results {
		for m, metric := range r.sc.metrics {
			for _, q := range r.sc.ratios {
				row(tw, r.sc.name, metric, r.ratioName(q), spread(r.ratioRounds(q, m)))
			}
		}
	}
	tw.Flush()
}

func row(w io.Writer, cells ...string) { fmt.Fprintln(w, strings.Join(cells, "\t")+"\t") }

// spread is "median (min..max)".
func spread(v []float64) string {
	return fmt.Sprintf("%s (%s..%s)", num(median(v)), num(slices.Min(v)), num(slices.Max(v)))
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// num prints three significant digits, or whole numbers from 1,000 up.
func num(v float64) string {
	if v >= 1000 || v <= -1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
