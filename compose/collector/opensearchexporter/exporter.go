// Package opensearchexporter is a small OpenTelemetry Collector logs exporter that bulk-indexes
// log records into an OpenSearch (Elasticsearch-API) index over plain HTTP.
//
// The contrib opensearchexporter is not served by the Go module proxy reachable here, so the
// collector built by compose/bare/collector.sh includes this module instead (builder `path:`).
// Each log record becomes one document shaped like the OpenSearch SS4O log schema:
//
//	{"@timestamp", "observedTimestamp", "body", "severity": {"text", "number"},
//	 "attributes": {...record fields...}, "resource": {...}, "instrumentationScope": {"name"},
//	 "traceId", "spanId"}
//
// Records the cluster rejects (mapping conflicts) are dropped with a warning; transport errors
// and 429/5xx answers are retried by the exporter helper (retry_on_failure, sending_queue).
//
// Exactly once: a record carrying a `log_id` attribute (every stgym record, stgym/logformat.py)
// is written with the bulk `create` action and that id as the document's _id, so a batch sent
// again (a retry after a timeout or an OpenSearch outage mid-bulk, the disk queue replayed after
// a collector restart) never indexes a record twice: OpenSearch answers 409 for the ones it
// already holds, which count as stored. Records without a log_id are indexed as before.
package opensearchexporter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.uber.org/zap"
)

var componentType = component.MustNewType("stgym_opensearch")

// Config of the exporter (keys under `exporters: stgym_opensearch:` in the collector config).
type Config struct {
	exporterhelper.TimeoutConfig `mapstructure:",squash"`
	// Endpoint is the cluster's base URL, e.g. http://127.0.0.1:9200.
	Endpoint string `mapstructure:"endpoint"`
	// LogsIndex is the index every log record is written to.
	LogsIndex    string                                                   `mapstructure:"logs_index"`
	BackOff      configretry.BackOffConfig                                `mapstructure:"retry_on_failure"`
	SendingQueue configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		return errors.New("endpoint must be set")
	}
	if c.LogsIndex == "" {
		return errors.New("logs_index must be set")
	}
	return nil
}

// NewFactory creates the exporter factory.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(componentType, createDefaultConfig,
		exporter.WithLogs(createLogs, component.StabilityLevelDevelopment))
}

func createDefaultConfig() component.Config {
	return &Config{
		TimeoutConfig: exporterhelper.TimeoutConfig{Timeout: 10 * time.Second},
		Endpoint:      "http://127.0.0.1:9200",
		LogsIndex:     "stgym-logs",
		BackOff:       configretry.NewDefaultBackOffConfig(),
		SendingQueue:  configoptional.Some(exporterhelper.NewDefaultQueueConfig()),
	}
}

func createLogs(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	c := cfg.(*Config)
	e := &logsExporter{
		endpoint: strings.TrimRight(c.Endpoint, "/"),
		index:    c.LogsIndex,
		client:   &http.Client{},
		logger:   set.Logger,
	}
	return exporterhelper.NewLogs(ctx, set, cfg, e.push,
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
		exporterhelper.WithTimeout(c.TimeoutConfig),
		exporterhelper.WithRetry(c.BackOff),
		exporterhelper.WithQueue(c.SendingQueue),
	)
}

type logsExporter struct {
	endpoint string
	index    string
	client   *http.Client
	logger   *zap.Logger
}

func timestamp(ts pcommon.Timestamp) string {
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

func document(res pcommon.Resource, scope pcommon.InstrumentationScope, lr plog.LogRecord) map[string]any {
	ts := lr.Timestamp()
	if ts == 0 {
		ts = lr.ObservedTimestamp()
	}
	doc := map[string]any{
		"@timestamp": timestamp(ts),
		"body":       lr.Body().AsRaw(),
		"attributes": lr.Attributes().AsRaw(),
	}
	if lr.ObservedTimestamp() != 0 {
		doc["observedTimestamp"] = timestamp(lr.ObservedTimestamp())
	}
	if lr.SeverityText() != "" || lr.SeverityNumber() != plog.SeverityNumberUnspecified {
		doc["severity"] = map[string]any{"text": lr.SeverityText(), "number": int32(lr.SeverityNumber())}
	}
	if res.Attributes().Len() > 0 {
		doc["resource"] = res.Attributes().AsRaw()
	}
	if scope.Name() != "" {
		doc["instrumentationScope"] = map[string]any{"name": scope.Name(), "version": scope.Version()}
	}
	if !lr.TraceID().IsEmpty() {
		doc["traceId"] = lr.TraceID().String()
	}
	if !lr.SpanID().IsEmpty() {
		doc["spanId"] = lr.SpanID().String()
	}
	return doc
}

func (e *logsExporter) push(ctx context.Context, ld plog.Logs) error {
	var body bytes.Buffer
	index, err := json.Marshal(map[string]any{"index": map[string]any{"_index": e.index}})
	if err != nil {
		return consumererror.NewPermanent(err)
	}
	count := 0
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		sls := rl.ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			sl := sls.At(j)
			lrs := sl.LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				line, err := json.Marshal(document(rl.Resource(), sl.Scope(), lr))
				if err != nil {
					e.logger.Warn("dropping a log record that cannot be encoded", zap.Error(err))
					continue
				}
				action := index
				if id, ok := lr.Attributes().Get("log_id"); ok && id.Type() == pcommon.ValueTypeStr && id.Str() != "" {
					action, err = json.Marshal(map[string]any{"create": map[string]any{"_index": e.index, "_id": id.Str()}})
					if err != nil {
						return consumererror.NewPermanent(err)
					}
				}
				body.Write(action)
				body.WriteByte('\n')
				body.Write(line)
				body.WriteByte('\n')
				count++
			}
		}
	}
	if count == 0 {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.endpoint+"/_bulk", &body)
	if err != nil {
		return consumererror.NewPermanent(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("bulk request to %s: %w", e.endpoint, err)
	}
	defer resp.Body.Close()
	payload, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return fmt.Errorf("bulk request to %s: HTTP %d: %.300s", e.endpoint, resp.StatusCode, payload)
	}
	if resp.StatusCode >= 300 {
		return consumererror.NewPermanent(fmt.Errorf("bulk request rejected: HTTP %d: %.300s", resp.StatusCode, payload))
	}
	var result struct {
		Errors bool `json:"errors"`
		Items  []map[string]struct {
			Status int             `json:"status"`
			Error  json.RawMessage `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal(payload, &result); err != nil {
		return consumererror.NewPermanent(fmt.Errorf("bulk response not understood: %w", err))
	}
	if result.Errors {
		failed, already := 0, 0
		var first string
		for _, item := range result.Items {
			for op, r := range item {
				if op == "create" && r.Status == http.StatusConflict {
					already++ // sent before (a retried batch): stored once, as it should be
					continue
				}
				if r.Status >= 300 {
					failed++
					if first == "" {
						first = string(r.Error)
					}
				}
			}
		}
		if already > 0 {
			e.logger.Info("log records already stored (a batch sent again)", zap.Int("skipped", already),
				zap.Int("sent", count))
		}
		if failed > 0 {
			e.logger.Warn("OpenSearch rejected log records", zap.Int("rejected", failed),
				zap.Int("sent", count), zap.String("first_error", first))
		}
	}
	return nil
}
