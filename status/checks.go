package status

import (
	"fmt"
	"math"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

func (j *judgement) components() {
	for _, name := range Components {
		r := j.by[name]
		if r == nil {
			continue
		}
		c := Component{Name: name, Addr: r.t.addr}
		if r.t.local != nil {
			c.Addr = "in-process"
		}
		check := Check{Area: "components", Name: CheckComponentPrefix + name, Question: fmt.Sprintf("Is %s up and ready?", name), Verdict: Green, Display: "up", Source: r.t.baseURL()}
		switch {
		case r.cur == nil:
			c.Error = fmt.Sprintf("not reachable at %s: %v", r.t.addr, r.err)
			check.Verdict, check.Display, check.Detail = Red, "down", fmt.Sprintf("%s: not reachable at %s (%v)", name, r.t.addr, r.err)
		case r.ready != "":
			c.Reachable = true
			c.Error = "not ready: " + r.ready
			check.Verdict, check.Display, check.Detail = Red, "not ready", fmt.Sprintf("%s: not ready: %s", name, r.ready)
		default:
			c.Reachable, c.Ready = true, true
		}
		if r.cur != nil {
			if start := r.cur.max(schemas.MetricProcessStart); !math.IsNaN(start) && start > 0 {
				c.Uptime = math.Max(0, float64(j.now.UnixMilli())/1000-start)
				if check.Detail == "" {
					check.Detail = "up " + formatSeconds(c.Uptime)
				}
			}
		}
		j.rep.Components = append(j.rep.Components, c)
		j.rep.Checks = append(j.rep.Checks, check)
	}
}

func (j *judgement) stores() {
	cfg := j.m.cfg
	for _, s := range []struct {
		name CheckName
		what string
		err  error
	}{
		{CheckStoreKafka, fmt.Sprintf("Kafka at %s", strings.Join(cfg.Kafka.Brokers, ",")), j.st.kafkaErr},
		{CheckStoreS3, fmt.Sprintf("S3 bucket %s at %s", cfg.S3.Bucket, cfg.S3.Endpoint), j.st.s3Err},
		{CheckStoreClickHouse, fmt.Sprintf("ClickHouse at %s", cfg.ClickHouse.Addr), j.st.chErr},
	} {
		c := Check{Area: "stores", Name: string(s.name), Question: "Is " + s.what + " reachable?", Verdict: Green, Display: "reachable"}
		if s.err != nil {
			c.Verdict, c.Display, c.Detail = Red, "not reachable", fmt.Sprintf("%s: %v", s.what, s.err)
		}
		j.rep.Checks = append(j.rep.Checks, c)
	}
}

func (j *judgement) ingestion() {
	j.partitions()
	r := j.comp("ingest")
	if r == nil {
		why := j.unreachable("ingest")
		j.down(CheckIngestEventsPerSecond, why)
		j.down(CheckIngestBytesPerSecond, why)
		j.down(CheckIngestRejectRatio, why)
		j.down(CheckIngestProduceLatencyP99Seconds, why)
		j.down(CheckIngestProduceFailureRatio, why)
	} else {
		const src = "ingest /metrics"
		j.add(CheckIngestEventsPerSecond, r.rate(schemas.MetricIngestAccepted, nil), "", src)
		j.add(CheckIngestBytesPerSecond, r.rate(schemas.MetricIngestBytes, nil), "", src)
		accepted := func(s *scrape) float64 { return s.sum(schemas.MetricIngestAccepted, nil) }
		rejected := func(s *scrape) float64 { return s.sum(schemas.MetricIngestRejected, nil) }
		failed := func(s *scrape) float64 { return s.sum(schemas.MetricIngestProduceFailed, nil) }
		v, since := r.ratio(rejected, func(s *scrape) float64 { return accepted(s) + rejected(s) })
		detail := joinCounts(r.byLabelDelta(schemas.MetricIngestRejected, "reason"), "by reason: ")
		if since {
			detail = strings.TrimSpace(joinCounts(r.cur.by(schemas.MetricIngestRejected, "reason"), "by reason: ") + " " + windowNote(since))
		}
		j.add(CheckIngestRejectRatio, v, detail, src)
		h, since := r.histWindow(schemas.MetricIngestProduceSeconds, nil)
		j.add(CheckIngestProduceLatencyP99Seconds, h.quantile(0.99), windowNote(since && h != nil && h.count > 0), src)
		v, since = r.ratio(failed, func(s *scrape) float64 { return accepted(s) + failed(s) })
		j.add(CheckIngestProduceFailureRatio, v, windowNote(since && !math.IsNaN(v)), src)
	}

	// Consumer lag per partition, from the stores.
	speedLag, archiveLag := math.NaN(), math.NaN()
	var speedTop, archTop []PartitionLag
	for _, p := range j.rep.Partitions {
		if p.SpeedLag >= 0 {
			speedLag = nanMax(speedLag, float64(p.SpeedLag))
			speedTop = append(speedTop, p)
		}
		if p.ArchiveLag >= 0 {
			archiveLag = nanMax(archiveLag, float64(p.ArchiveLag))
			archTop = append(archTop, p)
		}
	}
	detail, src := topLag(speedTop, func(p PartitionLag) int64 { return p.SpeedLag }), "Kafka high-water marks vs ClickHouse speed rows"
	if sp := j.comp("speed"); sp != nil && sp.cur.has(schemas.MetricSpeedConsumerLag) {
		m := sp.cur.max(schemas.MetricSpeedConsumerLag)
		if math.IsNaN(speedLag) && !math.IsNaN(m) {
			speedLag, src = m, "speed /metrics (stores unreadable)"
		} else if !math.IsNaN(m) {
			detail = strings.TrimSpace(detail + fmt.Sprintf("; speed's own reading at its last fetch: max %s", trimFloat(m)))
		}
	}
	if math.IsNaN(speedLag) {
		j.down(CheckKafkaSpeedLagMessages, j.storeWhy())
	} else {
		j.add(CheckKafkaSpeedLagMessages, speedLag, detail, src)
	}
	if math.IsNaN(archiveLag) {
		j.down(CheckKafkaArchiveLagMessages, j.storeWhy())
		j.down(CheckArchivePendingAgeSeconds, j.storeWhy())
		return
	}
	j.add(CheckKafkaArchiveLagMessages, archiveLag,
		topLag(archTop, func(p PartitionLag) int64 { return p.ArchiveLag }), "Kafka high-water marks vs the archive progress in S3")
	// Unarchived messages are normal (files roll every archive.max_file_age);
	// what matters is how long ago the archiver last made progress.
	age, why := 0.0, "everything is archived"
	if archiveLag > 0 {
		age, why = math.NaN(), ""
		for _, s := range j.m.cfg.Streams {
			p := j.st.progress[s.Name]
			lagging := false
			for _, pl := range j.rep.Partitions {
				lagging = lagging || (pl.Stream == s.Name && pl.ArchiveLag > 0)
			}
			if !lagging {
				continue
			}
			if p == nil || p.UpdatedAt.IsZero() {
				why = fmt.Sprintf("stream %s: no archive progress published yet", s.Name)
				if a := j.comp("archive"); a != nil {
					if start := a.cur.max(schemas.MetricProcessStart); !math.IsNaN(start) {
						age = nanMax(age, float64(j.now.UnixMilli())/1000-start)
					}
				}
				continue
			}
			age = nanMax(age, j.now.Sub(p.UpdatedAt).Seconds())
			why = fmt.Sprintf("last progress of %s at %s", s.Name, p.UpdatedAt.UTC().Format(time.RFC3339))
		}
	}
	j.add(CheckArchivePendingAgeSeconds, age, why, "S3 raw/<stream>/_progress.json")
}

// storeWhy explains a store-based value that could not be computed.
func (j *judgement) storeWhy() string {
	var parts []string
	for _, e := range []error{j.st.kafkaErr, j.st.s3Err, j.st.chErr} {
		if e != nil {
			parts = append(parts, e.Error())
		}
	}
	if len(parts) == 0 {
		return "no data yet"
	}
	return strings.Join(parts, "; ")
}

func nanMax(a, b float64) float64 {
	if math.IsNaN(a) || b > a {
		return b
	}
	return a
}

func topLag(ps []PartitionLag, lag func(PartitionLag) int64) string {
	sort.SliceStable(ps, func(a, b int) bool { return lag(ps[a]) > lag(ps[b]) })
	var parts []string
	for i, p := range ps {
		if i == 4 || lag(p) <= 0 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s/%d: %d", p.Stream, p.Partition, lag(p)))
	}
	if len(parts) == 0 {
		return "every partition caught up"
	}
	return "largest: " + strings.Join(parts, ", ")
}

// partitions fills the per-partition positions from the stores.
func (j *judgement) partitions() {
	st := j.st
	for _, s := range j.m.cfg.Streams {
		views := j.m.cfg.ViewsOf(s.Name)
		for p := int32(0); p < int32(s.Partitions); p++ {
			pl := PartitionLag{Stream: s.Name, Partition: p, HighWater: -1, SpeedNext: -1, SpeedLag: -1, ArchiveNext: -1, ArchiveLag: -1, Absorbed: -1, Unabsorbed: -1}
			if st.kafkaErr == nil && st.highWater != nil {
				if hw, ok := st.highWater[s.Name][p]; ok {
					pl.HighWater = hw
				}
			}
			if st.s3Err == nil && st.manifests != nil {
				absorbed := int64(-1)
				for _, v := range views {
					off := int64(0)
					if m := st.manifests[v.Name]; m != nil {
						off = m.Absorbed[p]
					}
					if absorbed < 0 || off < absorbed {
						absorbed = off
					}
				}
				pl.Absorbed = max(absorbed, 0)
				pl.ArchiveNext = 0
				if pr := st.progress[s.Name]; pr != nil {
					pl.ArchiveNext = pr.Next[p]
				}
			}
			if st.chErr == nil && st.speedNext != nil && len(views) > 0 {
				next := int64(0)
				for _, v := range views {
					next = max(next, st.speedNext[v.Name][p])
				}
				// Speed rows of absorbed chunks are deleted in time; the
				// absorbed offset is a floor of what speed had folded.
				pl.SpeedNext = max(next, pl.Absorbed)
			}
			if pl.HighWater >= 0 {
				if pl.SpeedNext >= 0 {
					pl.SpeedLag = max(0, pl.HighWater-pl.SpeedNext)
				}
				if pl.ArchiveNext >= 0 {
					pl.ArchiveLag = max(0, pl.HighWater-pl.ArchiveNext)
				}
				if pl.Absorbed >= 0 {
					pl.Unabsorbed = max(0, pl.HighWater-pl.Absorbed)
				}
			}
			j.rep.Partitions = append(j.rep.Partitions, pl)
		}
	}
}

func (j *judgement) processing() {
	r := j.comp("speed")
	names := []CheckName{CheckSpeedEventsPerSecond, CheckSpeedProcessingSecondsPerEvent, CheckSpeedErrorsPerMinute,
		CheckSpeedStalledPartitions, CheckSpeedDLQRatio, CheckSpeedDuplicateRatio, CheckSpeedIngestToVisibleP99Seconds}
	if r == nil {
		why := j.unreachable("speed")
		for _, n := range names {
			j.down(n, why)
		}
	} else {
		const src = "speed /metrics"
		consumed := func(s *scrape) float64 { return s.sum(schemas.MetricSpeedConsumed, nil) }
		j.add(names[0], r.rate(schemas.MetricSpeedConsumed, nil), "", src)
		h, since := r.histWindow(schemas.MetricSpeedProcessingSeconds, nil)
		j.add(names[1], h.mean(), windowNote(since && h != nil && h.count > 0), src)
		errs := math.NaN()
		if w := r.window(); w > 0 {
			errs = (r.delta(schemas.MetricSpeedClickHouseErrors, nil) + r.delta(schemas.MetricSpeedDLQErrors, nil)) / w * 60
		}
		j.add(names[2], errs,
			joinCounts(r.byLabelDelta(schemas.MetricSpeedClickHouseErrors, "table"), "ClickHouse errors by table: "), src)
		stalled := r.cur.sum(schemas.MetricSpeedStalledPartitions, nil)
		j.add(names[3], stalled, "", src)
		v, since := r.ratio(func(s *scrape) float64 { return s.sum(schemas.MetricSpeedDLQ, nil) }, consumed)
		j.add(names[4], v,
			strings.TrimSpace(joinCounts(r.byLabelDelta(schemas.MetricSpeedDLQ, "reason"), "by reason: ")+" "+windowNote(since && !math.IsNaN(v))), src)
		v, since = r.ratio(func(s *scrape) float64 { return s.sum(schemas.MetricSpeedDuplicates, nil) }, consumed)
		j.add(names[5], v, windowNote(since && !math.IsNaN(v)), src)
		h, since = r.histWindow(schemas.MetricSpeedIngestToVisible, nil)
		j.add(names[6], h.quantile(0.99), windowNote(since && h != nil && h.count > 0), src)
	}

	// Freshness: the newest event time visible to serving. The speed layer
	// knows it exactly; ClickHouse knows the newest window start (a bound).
	newest, src := math.NaN(), ""
	if r != nil {
		if v := r.cur.max(schemas.MetricSpeedNewestEventTime); !math.IsNaN(v) && v > 0 {
			newest, src = v, "speed /metrics (newest event time written to ClickHouse)"
		}
	}
	if j.st.chErr == nil {
		for _, t := range j.st.newestWindow {
			if sec := float64(t.Unix()); math.IsNaN(newest) || sec > newest {
				newest, src = sec, "ClickHouse: newest window start of the speed rows"
			}
		}
	}
	switch {
	case !math.IsNaN(newest):
		fresh := math.Max(0, float64(j.now.UnixMilli())/1000-newest)
		j.add(CheckSpeedFreshnessSeconds, fresh,
			"newest event "+time.UnixMilli(int64(newest*1000)).UTC().Format(time.RFC3339), src)
	case r == nil && j.st.chErr != nil:
		j.down(CheckSpeedFreshnessSeconds, j.unreachable("speed")+"; "+j.st.chErr.Error())
	default:
		j.add(CheckSpeedFreshnessSeconds, math.NaN(), "no event is visible yet", "")
	}
}

func (j *judgement) storage() {
	if r := j.comp("speed"); r == nil {
		why := j.unreachable("speed")
		j.down(CheckClickHouseInsertLatencyP99Seconds, why)
		j.down(CheckClickHouseInsertErrorRatio, why)
	} else {
		const src = "speed /metrics"
		h, since := r.histWindow(schemas.MetricSpeedInsertSeconds, nil)
		j.add(CheckClickHouseInsertLatencyP99Seconds, h.quantile(0.99), windowNote(since && h != nil && h.count > 0), src)
		errs := func(s *scrape) float64 { return s.sum(schemas.MetricSpeedClickHouseErrors, nil) }
		v, since := r.ratio(errs, func(s *scrape) float64 { return s.sum(schemas.MetricSpeedInsertSeconds, nil) + errs(s) })
		j.add(CheckClickHouseInsertErrorRatio, v, windowNote(since && !math.IsNaN(v)), src)
	}
	if j.st.chErr != nil {
		why := "ClickHouse: " + j.st.chErr.Error()
		j.down(CheckClickHouseMaxPartsPerPartition, why)
		j.down(CheckClickHouseParts, why)
		j.down(CheckClickHouseBytes, why)
	} else {
		var worst partInfo
		var parts, bytes, rows uint64
		for _, p := range j.st.parts {
			parts, bytes, rows = parts+p.parts, bytes+p.bytes, rows+p.rows
			if p.parts > worst.parts {
				worst = p
			}
		}
		detail := "no tables yet"
		if worst.parts > 0 {
			detail = fmt.Sprintf("%s partition %s", worst.table, worst.partition)
		}
		j.add(CheckClickHouseMaxPartsPerPartition, float64(worst.parts), detail, "ClickHouse system.parts")
		j.add(CheckClickHouseParts, float64(parts), fmt.Sprintf("%d rows in %d table partitions", rows, len(j.st.parts)), "ClickHouse system.parts")
		j.add(CheckClickHouseBytes, float64(bytes), "", "ClickHouse system.parts")
	}
	if r := j.comp("archive"); r == nil {
		j.down(CheckS3UploadLatencyP99Seconds, j.unreachable("archive"))
	} else {
		name := schemas.MetricArchiveUploadSeconds
		if !r.cur.has(name) {
			name = schemas.MetricS3UploadSeconds
		}
		h, since := r.histWindow(name, nil)
		j.add(CheckS3UploadLatencyP99Seconds, h.quantile(0.99), windowNote(since && h != nil && h.count > 0), "archive /metrics")
	}
	// S3 errors over every component that talks to S3.
	var num, den, numAll, denAll float64
	var srcs []string
	for _, name := range []string{"archive", "serve"} {
		r := j.comp(name)
		if r == nil || !r.cur.has(schemas.MetricS3RequestSeconds) {
			continue
		}
		srcs = append(srcs, name)
		e, n := r.delta(schemas.MetricS3Errors, nil), r.delta(schemas.MetricS3RequestSeconds, nil)
		num, den = num+e, den+n
		numAll, denAll = numAll+r.cur.sum(schemas.MetricS3Errors, nil), denAll+r.cur.sum(schemas.MetricS3RequestSeconds, nil)
	}
	v, note := math.NaN(), ""
	switch {
	case den > 0:
		v = num / den
	case denAll > 0:
		v, note = numAll/denAll, windowNote(true)
	}
	src := ""
	if len(srcs) > 0 {
		src = strings.Join(srcs, ", ") + " /metrics"
	}
	j.add(CheckS3ErrorRatio, v, note, src)
}

func (j *judgement) batch() {
	if j.st.s3Err != nil {
		why := "S3: " + j.st.s3Err.Error()
		for _, n := range []CheckName{CheckBatchLastRunAgeSeconds, CheckBatchLastRunDurationSeconds, CheckBatchChunksAbsorbed,
			CheckBatchUnabsorbedMessages, CheckBatchSpeedRowsAwaiting} {
			j.down(n, why)
		}
		return
	}
	age, dur, chunks := math.NaN(), math.NaN(), math.NaN()
	var missing, runs []string
	for _, v := range j.m.cfg.Views {
		m := j.st.manifests[v.Name]
		if m == nil {
			missing = append(missing, v.Name)
			continue
		}
		age = nanMax(age, j.now.Sub(m.CreatedAt).Seconds())
		dur = nanMax(dur, m.Duration)
		var k int64
		for p := range m.Absorbed {
			k += m.AbsorbedChunks(p)
		}
		chunks = nanMax(chunks, float64(k))
		runs = append(runs, fmt.Sprintf("%s: run %s at %s, %d chunks, %d events (%d duplicates, %d invalid)",
			v.Name, m.RunID, m.CreatedAt.UTC().Format(time.RFC3339), k, m.Events, m.Duplicates, m.Invalid))
	}
	detail := strings.Join(runs, "; ")
	if len(missing) > 0 {
		detail = strings.TrimPrefix(detail+"; no run published yet for "+strings.Join(missing, ", "), "; ")
	}
	c := j.add(CheckBatchLastRunAgeSeconds, age, detail, "S3 views/<view>/_current.json")
	if len(missing) > 0 && c.Verdict != Red {
		// No run yet: fine for a new deployment, worth a look on an old one.
		c.Verdict = Yellow
	}
	j.add(CheckBatchLastRunDurationSeconds, dur, "", "S3 manifests")
	j.add(CheckBatchChunksAbsorbed, chunks, "", "S3 manifests")

	unabsorbed := math.NaN()
	for _, p := range j.rep.Partitions {
		if p.Unabsorbed >= 0 {
			unabsorbed = nanMax(unabsorbed, 0) + float64(p.Unabsorbed)
		}
	}
	if math.IsNaN(unabsorbed) {
		j.down(CheckBatchUnabsorbedMessages, j.storeWhy())
	} else {
		j.add(CheckBatchUnabsorbedMessages, unabsorbed, "", "Kafka high-water marks vs manifests")
	}
	if j.st.chErr != nil {
		j.down(CheckBatchSpeedRowsAwaiting, "ClickHouse: "+j.st.chErr.Error())
		return
	}
	var awaiting, absorbedLeft uint64
	for _, v := range j.m.cfg.Views {
		m := j.st.manifests[v.Name]
		for p, chunks := range j.st.speedChunks[v.Name] {
			k := m.AbsorbedChunks(p)
			for chunk, n := range chunks {
				if chunk >= k {
					awaiting += n
				} else {
					absorbedLeft += n
				}
			}
		}
	}
	j.add(CheckBatchSpeedRowsAwaiting, float64(awaiting),
		fmt.Sprintf("%d stored rows of absorbed chunks wait for deletion", absorbedLeft), "ClickHouse <view>_speed vs manifests")
}

func (j *judgement) serving() {
	r := j.comp("serve")
	if r == nil {
		why := j.unreachable("serve")
		for _, n := range []CheckName{CheckServeQueriesPerSecond, CheckServeQueryLatencyP50Seconds, CheckServeQueryLatencyP90Seconds,
			CheckServeQueryLatencyP99Seconds, CheckServeErrorRatio, CheckServeCacheMissRatio, CheckServeSpeedFailureRatio} {
			j.down(n, why)
		}
		return
	}
	const src = "serve /metrics"
	const lat = schemas.MetricServeQuerySeconds
	j.add(CheckServeQueriesPerSecond, r.rate(lat, nil), "", src)
	h, since := r.histWindow(lat, nil)
	note := windowNote(since && h != nil && h.count > 0)
	if h == nil || h.count == 0 {
		note = "no queries yet"
	}
	j.add(CheckServeQueryLatencyP50Seconds, h.quantile(0.5), note, src)
	j.add(CheckServeQueryLatencyP90Seconds, h.quantile(0.9), note, src)
	j.add(CheckServeQueryLatencyP99Seconds, h.quantile(0.99), note, src)
	queries := func(s *scrape) float64 { return s.sum(lat, nil) }
	v, since := r.ratio(func(s *scrape) float64 {
		return s.sum(lat, func(l map[string]string) bool { return strings.HasPrefix(l["code"], "5") })
	}, queries)
	j.add(CheckServeErrorRatio, v,
		strings.TrimSpace(joinCounts(r.byLabelDelta(schemas.MetricServeErrors, "code"), "errors by code: ")+" "+windowNote(since && !math.IsNaN(v))), src)
	hits := func(s *scrape) float64 { return s.sum(schemas.MetricServeCacheHits, nil) }
	misses := func(s *scrape) float64 { return s.sum(schemas.MetricServeCacheMisses, nil) }
	v, since = r.ratio(misses, func(s *scrape) float64 { return hits(s) + misses(s) })
	detail := ""
	if !math.IsNaN(v) {
		detail = strings.TrimSpace(fmt.Sprintf("hit rate %.1f%% %s", (1-v)*100, windowNote(since)))
	}
	j.add(CheckServeCacheMissRatio, v, detail, src)
	v, since = r.ratio(func(s *scrape) float64 { return s.sum(schemas.MetricServeSpeedFailures, nil) }, queries)
	j.add(CheckServeSpeedFailureRatio, v, windowNote(since && !math.IsNaN(v)), src)
}

func (j *judgement) security() {
	// Auth failures by endpoint, from every component that counts them.
	byEndpoint := map[string]float64{}
	var total, window float64
	measured := false
	for _, name := range []string{"ingest", "serve"} {
		r := j.comp(name)
		if r == nil {
			continue
		}
		for _, fam := range []schemas.Metric{schemas.MetricAuthFailures, schemas.MetricServeAuthFailures} {
			if !r.cur.has(fam) && !(r.prev.has(fam)) {
				continue
			}
			for ep, d := range r.byLabelDelta(fam, "endpoint") {
				byEndpoint[name+":"+ep] += d
				total += d
			}
		}
		if w := r.window(); w > 0 {
			measured = true
			window = math.Max(window, w)
		}
	}
	perMin := math.NaN()
	if measured {
		perMin = total / window * 60
	}
	j.add(CheckSecurityAuthFailuresPerMinute, perMin,
		joinCounts(byEndpoint, "by endpoint: "), "ingest and serve /metrics")

	cfg := j.m.cfg
	var open []string
	if len(cfg.Auth.IngestTokens) == 0 {
		open = append(open, "ingest accepts events without a token (auth.ingest_tokens is empty)")
	}
	if len(cfg.Auth.QueryTokens) == 0 {
		open = append(open, "the query API and dashboard need no token (auth.query_tokens is empty)")
	}
	for _, name := range []string{"ingest", "serve"} {
		if e := j.m.opts.Deployment.Endpoints[name]; !e.TLS.Enabled() && !loopback(e.Listen) {
			open = append(open, name+" serves plain HTTP on "+e.Listen)
		}
	}
	// Connections to the stores cross the network too: plaintext to a
	// store that is not on this host shows its passwords and data to
	// anyone on the path.
	for _, b := range cfg.Kafka.Brokers {
		if !cfg.Kafka.TLS.On() && !loopback(b) {
			open = append(open, "Kafka is reached without TLS at "+b+" (kafka.tls)")
			break
		}
	}
	if !cfg.ClickHouse.TLS.On() && !loopback(cfg.ClickHouse.Addr) {
		open = append(open, "ClickHouse is reached without TLS at "+cfg.ClickHouse.Addr+" (clickhouse.tls)")
	}
	if s3 := cfg.S3; !s3.TLS.On() && !s3.Secure && !strings.HasPrefix(s3.Endpoint, "https://") && !loopback(strings.TrimPrefix(s3.Endpoint, "http://")) {
		open = append(open, "S3 is reached over plain HTTP at "+s3.Endpoint+" (s3.secure or s3.tls)")
	}
	detail := "tokens required; TLS on every non-loopback listener and store connection"
	if len(open) > 0 {
		detail = strings.Join(open, "; ")
	}
	j.add(CheckSecurityOpenSurfaces, float64(len(open)), detail, "configuration")
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
