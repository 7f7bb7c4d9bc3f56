// Source of the Go vectors in tests/unit/test_gojson.py: `go run gojson_vectors.go`
// prints each json.Marshal output in base64 (recorded with go1.19.8, Debian bookworm).
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime"
)

type ProvReq struct {
	DeviceID     string `json:"deviceID"`
	IP           string `json:"ip"`
	MAC          string `json:"mac"`
	PublicKeyPEM string `json:"publicKeyPEM"`
	Signature    string `json:"signature"`
}

type ProvResp struct {
	RetrySec      uint   `json:"retrySec,omitempty"`
	Status        string `json:"status"`
	CaCertPEM     string `json:"caCert"`
	ClientCertPEM string `json:"clientCert"`
	Signature     string `json:"signature"`
}

type Status struct {
	DeviceID      string `json:"deviceID"`
	Status        string `json:"status"`
	CaCertPEM     string `json:"caCert"`
	ClientCertPEM []byte `json:"clientCert"`
}

type Dir struct {
	Services map[string]string `json:"services"`
	Ca       []byte            `json:"caCert"`
	List     []string          `json:"list"`
	Flag     bool              `json:"flag"`
	Neg      int               `json:"neg"`
}

func show(name string, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\t%s\n", name, base64.StdEncoding.EncodeToString(b))
}

func main() {
	extra()
	fmt.Println("go", runtime.Version())
	show("request", ProvReq{
		DeviceID:     "AA:BB:CC:DD:EE:FF",
		IP:           "192.0.2.7",
		PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nMFkw+/=\n-----END PUBLIC KEY-----\n",
	})
	show("escapes", ProvReq{
		DeviceID:     "<a href=\"x\">&amp;</a>",
		IP:           "tab\there\rcr\\back",
		MAC:          "\x00\x01\x08\x0c\x1f\x7f",
		PublicKeyPEM: "é ü € 😀 \u2028 \u2029 \u2027 \u202a \ufffd",
	})
	show("response", ProvResp{Status: "Waiting"})
	show("response_retry", ProvResp{RetrySec: 30, Status: "Waiting"})
	show("status", Status{DeviceID: "d1", Status: "Waiting"})
	show("status_bytes", Status{DeviceID: "d1", Status: "Approved", ClientCertPEM: []byte("-----BEGIN CERTIFICATE-----\nAB\n")})
	show("map", Dir{
		Services: map[string]string{"mqtt": "mqtts://b:8883", "api": "https://a", "Zeta": "z", "ä": "u"},
		Ca:       []byte{0xfb, 0xff, 0x00},
		List:     []string{"x", "<y>"},
		Flag:     true,
		Neg:      -42,
	})
	show("empty", Dir{Services: map[string]string{}, Ca: []byte{}})
}

func sign(message string, secret string) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(message))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func extra() {
	req := ProvReq{DeviceID: "AA:BB:CC:DD:EE:FF", IP: "192.0.2.7",
		PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nMFkw+/=\n-----END PUBLIC KEY-----\n"}
	b, _ := json.Marshal(req)
	fmt.Println("signature", sign(string(b), "12345678"))
	var r ProvReq
	_ = json.Unmarshal([]byte(`{"deviceID":"\ud800x\udc00"}`), &r)
	b, _ = json.Marshal(r)
	fmt.Println("surrogate", base64.StdEncoding.EncodeToString(b))
}
