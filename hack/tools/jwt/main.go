// Command jetway-jwt mints, for the test ground, a NATS operator, a system account,
// an account with JetStream and a user of it, as nsc would (nsc itself is not on the
// Go module proxy). It writes DIR/server.conf (operator mode, memory resolver) and
// DIR/user.creds.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, "jetway-jwt:", err)
		os.Exit(1)
	}
	return v
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: jetway-jwt DIR")
		os.Exit(2)
	}
	dir := os.Args[1]

	operator := must(nkeys.CreateOperator())
	operatorPub := must(operator.PublicKey())

	system := must(nkeys.CreateAccount())
	systemPub := must(system.PublicKey())
	systemClaims := jwt.NewAccountClaims(systemPub)
	systemClaims.Name = "SYS"
	systemJWT := must(systemClaims.Encode(operator))

	operatorClaims := jwt.NewOperatorClaims(operatorPub)
	operatorClaims.Name = "jetway-test"
	operatorClaims.SystemAccount = systemPub
	operatorJWT := must(operatorClaims.Encode(operator))

	account := must(nkeys.CreateAccount())
	accountPub := must(account.PublicKey())
	accountClaims := jwt.NewAccountClaims(accountPub)
	accountClaims.Name = "APP"
	accountClaims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accountJWT := must(accountClaims.Encode(operator))

	user := must(nkeys.CreateUser())
	userPub := must(user.PublicKey())
	userClaims := jwt.NewUserClaims(userPub)
	userClaims.Name = "app"
	userJWT := must(userClaims.Encode(account))
	creds := must(jwt.FormatUserConfig(userJWT, must(user.Seed())))

	config := fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %s\n  %s: %s\n}\n",
		operatorJWT, systemPub, systemPub, systemJWT, accountPub, accountJWT)
	must(0, os.WriteFile(filepath.Join(dir, "server.conf"), []byte(config), 0o600))
	must(0, os.WriteFile(filepath.Join(dir, "user.creds"), creds, 0o600))
}
