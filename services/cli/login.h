// Signing in from the command line.
//
//   labshare login [--issuer=URL] [--client_id=labshare-cli] [--oidc_ca_file=PEM]
//   labshare logout
//   labshare whoami
//   labshare token      (prints the access token, renewed when due: for curl)
//
// login runs the OpenID Connect device authorization grant (RFC 8628) at the
// consortium's provider: it reads the provider's discovery document, asks
// for a device code, prints the address to open and the code to confirm,
// polls the token endpoint (honouring interval and slow_down) until the
// person has signed in in a browser, then exchanges the provider's ID token
// at inventory (labshare.identity.v1.IdentityService/ExchangeToken) for
// LabShare tokens. They are kept in
//   ${XDG_CONFIG_HOME:-~/.config}/labshare/credentials.json
// (mode 0600, directory 0700) and sent with every later call; when fewer
// than 60 s remain on the access token it is renewed through RefreshToken
// first (serialised by a lock on the file, since a refresh token works
// once). logout revokes the session (RevokeToken) and deletes the file;
// whoami prints who the stored tokens name.
//
// Settings, first match wins: the flag, the environment (LABSHARE_ISSUER,
// LABSHARE_CLIENT_ID, LABSHARE_OIDC_CA_FILE, LABSHARE_INVENTORY,
// LABSHARE_TLS_CA, LABSHARE_TLS_CERT, LABSHARE_TLS_KEY), the config file
// ($LABSHARE_CONFIG, else ~/.config/labshare/config: "issuer = URL",
// "client_id = ...", "oidc_ca_file = PEM", "inventory = HOST:PORT",
// "tls_ca = PEM", ...). The channel to inventory (ExchangeToken, the
// automatic RefreshToken, RevokeToken) uses tls_ca / tls_cert / tls_key as
// every other call of the client does; without tls_ca, plaintext to
// loopback only (PLAINTEXT_REFUSED otherwise).
//
// Exit codes: 0 success; 2 usage; 3 local or provider trouble (no issuer,
// provider unreachable, the person declined, the code expired); 10 + the
// gRPC code when inventory refused (26 UNAUTHENTICATED, 17 PERMISSION_DENIED
// for a person LabShare does not know or who may not sign in); 26 also when
// nobody is signed in. Errors print "error: ..." on stderr; under --json one
// JSON object on one line (format.h StatusJson / LocalErrorJson).
#ifndef LABSHARE_SERVICES_CLI_LOGIN_H_
#define LABSHARE_SERVICES_CLI_LOGIN_H_

#include <map>
#include <string>

namespace labshare::cli {

// "login", "logout", "whoami", "token".
bool IsAccountCommand(const std::string& word);

// Runs an account command. flags: the command line's --key=value pairs
// (issuer, client_id, oidc_ca_file, inventory, json, timeout, tls_ca,
// tls_cert, tls_key; --token and --token_file are refused: exit 2).
int RunAccountCommand(const std::string& command, const std::map<std::string, std::string>& flags);

// The access token for a call when the command line named none: the stored
// one, renewed first when fewer than 60 s remain; "" when nobody is signed
// in. flags: the command line's global flags (tls_ca, tls_cert, tls_key for
// the channel of the renewal, then LABSHARE_TLS_* and the config file; json
// for the form of errors). When the renewal is refused (session revoked,
// user disabled) it prints the error and exits (10 + the gRPC code).
std::string StoredAccessToken(const std::map<std::string, std::string>& flags);

// The client's settings file, `key = value` lines (# comments): the file
// LABSHARE_CONFIG names, else ~/.config/labshare/config; empty when absent.
// A malformed line is a local error (exit 3).
std::map<std::string, std::string> ReadConfigFile();

// ${XDG_CONFIG_HOME:-$HOME/.config}/labshare/credentials.json
std::string CredentialsPath();

}  // namespace labshare::cli

#endif  // LABSHARE_SERVICES_CLI_LOGIN_H_
