//go:build tools

// Package tools pins the etcd command the test ground builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
