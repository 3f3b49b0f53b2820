//! Every metric name tandem exports, described once. docs/METRICS.md lists them.
