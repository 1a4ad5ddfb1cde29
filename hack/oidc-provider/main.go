// A real OpenID Provider for Plait's tests: the example server of github.com/zitadel/oidc
// (an OpenID Certified provider library), with its users and their groups read from a JSON
// file and a "groups" claim added to the ID token and the userinfo answer.
//
//	PLAIT_OIDC_PORT=5556 PLAIT_OIDC_USERS=users.json PLAIT_OIDC_CLIENT_ID=plait \
//	PLAIT_OIDC_CLIENT_SECRET=... PLAIT_OIDC_REDIRECT_URI=http://127.0.0.1:8000/v1/auth/oidc/callback \
//	oidc-provider
//
// users.json: {"<subject>": {"username": "...", "password": "...", "email": "...",
// "groups": ["..."]}}. The issuer is http://localhost:<port>/; people sign in on its
// /login/username form. It listens on the loopback addresses only.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

type account struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	Email    string   `json:"email"`
	Groups   []string `json:"groups"`
}

type users map[string]*storage.User

func (u users) GetUserByID(id string) *storage.User { return u[id] }

func (u users) GetUserByUsername(name string) *storage.User {
	for _, user := range u {
		if user.Username == name {
			return user
		}
	}
	return nil
}

func (u users) ExampleClientID() string { return "service" }

// withGroups adds each user's groups to what the example storage asserts.
type withGroups struct {
	*storage.Storage
	groups map[string][]string
}

func (s *withGroups) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	info.AppendClaims("groups", s.groups[token.GetSubject()])
	return nil
}

func (s *withGroups) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, info, tokenID, subject, origin); err != nil {
		return err
	}
	info.AppendClaims("groups", s.groups[info.Subject])
	return nil
}

func must(name string) string {
	value := os.Getenv(name)
	if value == "" {
		fmt.Fprintf(os.Stderr, "oidc-provider: %s is required\n", name)
		os.Exit(2)
	}
	return value
}

func main() {
	port := must("PLAIT_OIDC_PORT")
	data, err := os.ReadFile(must("PLAIT_OIDC_USERS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider:", err)
		os.Exit(2)
	}
	accounts := map[string]account{}
	if err := json.Unmarshal(data, &accounts); err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider: users file:", err)
		os.Exit(2)
	}
	store := users{}
	groups := map[string][]string{}
	for id, a := range accounts {
		store[id] = &storage.User{
			ID: id, Username: a.Username, Password: a.Password, FirstName: a.Username,
			Email: a.Email, EmailVerified: true, PreferredLanguage: language.English,
		}
		groups[id] = a.Groups
	}
	storage.RegisterClients(storage.WebClient(
		must("PLAIT_OIDC_CLIENT_ID"), must("PLAIT_OIDC_CLIENT_SECRET"), must("PLAIT_OIDC_REDIRECT_URI"),
	))
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	issuer := fmt.Sprintf("http://localhost:%s/", port)
	router := exampleop.SetupServer(issuer, &withGroups{storage.NewStorage(store), groups}, logger, false)
	server := &http.Server{Handler: router}
	served := 0
	for _, host := range []string{"127.0.0.1", "::1"} {
		listener, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			logger.Warn("not listening", "host", host, "error", err)
			continue
		}
		served++
		go func() { _ = server.Serve(listener) }()
	}
	if served == 0 {
		os.Exit(1)
	}
	logger.Info("serving", "issuer", issuer)
	select {}
}
