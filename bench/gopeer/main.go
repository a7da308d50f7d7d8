// The Go peer: a net/http mutating webhook doing the injector's work for the benchmark
// request (the default template, discovery type sc), with the standard library only, as
// a Go injector would be written: decode the AdmissionReview into structs, read the
// annotations, build the JSON Patch (the mesher container, http_proxy on each app
// container, the status and revision annotations), answer the same AdmissionReview.
// bench/throughput.py builds and runs it beside the injector and the floor.
package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"strings"
)

type review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *request `json:"request,omitempty"`
	Response   *answer  `json:"response,omitempty"`
}

type request struct {
	UID       string `json:"uid"`
	Operation string `json:"operation"`
	Namespace string `json:"namespace"`
	Object    pod    `json:"object"`
}

type pod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		HostNetwork bool `json:"hostNetwork"`
		Containers  []struct {
			Name string            `json:"name"`
			Env  []json.RawMessage `json:"env"`
		} `json:"containers"`
	} `json:"spec"`
}

type answer struct {
	UID       string  `json:"uid"`
	Allowed   bool    `json:"allowed"`
	PatchType *string `json:"patchType,omitempty"`
	Patch     string  `json:"patch,omitempty"`
}

type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

type env struct {
	Name      string `json:"name"`
	Value     string `json:"value,omitempty"`
	ValueFrom any    `json:"valueFrom,omitempty"`
}

func field(path string) any {
	return map[string]any{"fieldRef": map[string]string{"fieldPath": path}}
}

func mesher(serviceName, version, ports string) map[string]any {
	probe := map[string]any{"tcpSocket": map[string]int{"port": 30101}}
	return map[string]any{
		"name":            "mesher",
		"image":           "servicecomb/mesher-sidecar:1.6.3",
		"imagePullPolicy": "IfNotPresent",
		"command":         []string{"sh", "/opt/mesher/start.sh"},
		"env": []env{
			{Name: "SERVICE_NAME", Value: serviceName},
			{Name: "VERSION", Value: version},
			{Name: "APP_ID", Value: "default"},
			{Name: "SERVICE_PORTS", Value: ports},
			{Name: "POD_NAME", ValueFrom: field("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
			{Name: "INSTANCE_IP", ValueFrom: field("status.podIP")},
			{Name: "CSE_REGISTRY_ADDR", Value: "http://service-center.servicecomb:30100"},
		},
		"ports": []map[string]any{
			{"name": "mesher-http", "containerPort": 30101, "protocol": "TCP"},
			{"name": "mesher-grpc", "containerPort": 40101, "protocol": "TCP"},
			{"name": "mesher-admin", "containerPort": 30102, "protocol": "TCP"},
		},
		"readinessProbe": map[string]any{"tcpSocket": probe["tcpSocket"], "periodSeconds": 5},
		"resources": map[string]any{
			"requests": map[string]string{"cpu": "50m", "memory": "64Mi"},
			"limits":   map[string]string{"memory": "256Mi"},
		},
		"securityContext": map[string]any{
			"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 1000,
		},
	}
}

func patch(p *pod) []op {
	meta := p.Metadata
	name := meta.Labels["app"]
	if name == "" {
		name = meta.Name
	}
	ops := []op{{"add", "/spec/containers/-", mesher(name, meta.Labels["version"], meta.Annotations["sidecar.mesher.io/servicePorts"])}}
	proxy := env{Name: "http_proxy", Value: "http://127.0.0.1:30101"}
	for i, c := range p.Spec.Containers {
		at := "/spec/containers/" + strconv.Itoa(i) + "/env"
		if c.Env == nil { // a missing list is added whole
			ops = append(ops, op{"add", at, []env{proxy}})
		} else {
			ops = append(ops, op{"add", at + "/-", proxy})
		}
	}
	ops = append(ops,
		op{"add", "/metadata/annotations/sidecar.mesher.io~1status", "injected"},
		op{"add", "/metadata/annotations/sidecar.mesher.io~1template-revision", "069a3416a90c"})
	return ops
}

func mutate(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusBadRequest)
		return
	}
	var in review
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&in); err != nil || in.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	out := answer{UID: in.Request.UID, Allowed: true}
	p := &in.Request.Object
	inject := strings.ToLower(strings.TrimSpace(p.Metadata.Annotations["sidecar.mesher.io/inject"]))
	if in.Request.Operation == "CREATE" && (inject == "yes" || inject == "y") && !p.Spec.HostNetwork &&
		p.Metadata.Annotations["sidecar.mesher.io/status"] == "" {
		data, err := json.Marshal(patch(p))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		kind := "JSONPatch"
		out.PatchType = &kind
		out.Patch = base64.StdEncoding.EncodeToString(data)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(review{APIVersion: in.APIVersion, Kind: in.Kind, Response: &out})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	cert := flag.String("cert", "", "serving certificate (PEM)")
	key := flag.String("key", "", "serving key (PEM)")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", mutate)
	server := &http.Server{Addr: *addr, Handler: mux, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
