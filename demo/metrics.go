package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// nodeScrapeTimeout bounds the supervisor's scrape of one node.
const nodeScrapeTimeout = 2 * time.Second

// metricsHandler is the supervisor's GET /metrics: its own Go runtime and
// process metrics, headcount_demo_node_up{node} for every node, and the
// headcount_* families of every running node, each series labelled with
// its node's instance ID. One scrape target thus covers the whole demo.
// A node that does not answer is left out of that scrape (and its
// headcount_demo_node_up is 0).
func (s *supervisor) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(prometheus.Gatherers{reg, prometheus.GathererFunc(s.gatherNodes)},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// gatherNodes scrapes every running node at once and merges their
// headcount_* families, adding a node label.
func (s *supervisor) gatherNodes() ([]*dto.MetricFamily, error) {
	nodes := s.nodes()
	got := make([]map[string]*dto.MetricFamily, len(nodes))
	var wg sync.WaitGroup
	for k, n := range nodes {
		if n.State != stateUp {
			continue
		}
		wg.Go(func() {
			fams, err := scrape("http://" + dialAddr(n.Addr) + "/metrics")
			if err != nil {
				s.log.Debug("scraping a node", "node", n.Instance, "err", err)
				return
			}
			got[k] = fams
		})
	}
	wg.Wait()
	merged := map[string]*dto.MetricFamily{}
	up := &dto.MetricFamily{Name: new(nodeUpName), Help: new(nodeUpHelp), Type: dto.MetricType_GAUGE.Enum()}
	for k, n := range nodes {
		v := 0.0
		if got[k] != nil {
			v = 1
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: []*dto.LabelPair{label("node", n.Instance)}, Gauge: &dto.Gauge{Value: &v}})
		for name, f := range got[k] {
			if !strings.HasPrefix(name, "headcount_") {
				continue // the supervisor's own Go and process metrics stand for it
			}
			m := merged[name]
			if m == nil {
				m = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
				merged[name] = m
			}
			for _, metric := range f.Metric {
				metric.Label = append(metric.Label, label("node", n.Instance))
				slices.SortFunc(metric.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
				m.Metric = append(m.Metric, metric)
			}
		}
	}
	out := []*dto.MetricFamily{up}
	for _, f := range merged {
		out = append(out, f)
	}
	return out, nil
}

const (
	nodeUpName = "headcount_demo_node_up"
	nodeUpHelp = "1 if the demo node answered the supervisor's scrape of its /metrics, 0 if it is down or did not answer."
)

func label(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

// scrape reads the metrics at url in Prometheus' text format.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), nodeScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}
