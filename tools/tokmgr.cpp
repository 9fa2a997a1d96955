// tokmgr — the command-line program: the reference server (`serve`), a JWT
// for scripts (`token`) and a load generator (`load`). See the README.
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include <tokmgr/error.hpp>
#include <tokmgr/version.hpp>

#include "cli/args.hpp"
#include "cli/exit_status.hpp"
#include "cli/load.hpp"
#include "cli/output.hpp"
#include "cli/serve.hpp"
#include "cli/token.hpp"

namespace {

// Each command's synopsis, written once: `tokmgr --help` shows them all,
// `tokmgr COMMAND --help` its own (docs/cli.md quotes the first; cli_test.sh
// checks that the quote agrees).
constexpr const char* serve_synopsis =
    "  tokmgr serve [--host H] [--port P] [--user NAME:PASSWORD]... [--api-key KEY]\n"
    "               [--jwt-ttl SECONDS] [--refresh-ttl SECONDS] [--tls-cert FILE --tls-key FILE]\n"
    "               [--auth-rpm-limit N] [--max-connections N] [--max-connections-per-client N]\n"
    "               [--auth-delay-ms MS]\n";
constexpr const char* token_synopsis =
    "  tokmgr token [--url URL] [--user NAME] [--ca-file FILE] [--insecure] [--proxy URL]\n"
    "               [--store PATH|REDIS-URL|POSTGRESQL-URL [--lease-wait SECONDS] [--lease-ttl SECONDS]\n"
    "                [--store-ca-file FILE] [--store-cert-file FILE --store-key-file FILE]]\n";
constexpr const char* load_synopsis =
    "  tokmgr load  [--url URL] [--user NAME] --threads N --duration SECONDS --path PATH [--ca-file FILE]\n"
    "               [--proxy URL] [--store PATH|REDIS-URL|POSTGRESQL-URL [--lease-wait SECONDS] [--lease-ttl SECONDS]\n"
    "                [--store-ca-file FILE] [--store-cert-file FILE --store-key-file FILE]]\n";
constexpr const char* version_synopsis = "  tokmgr --version | --help | COMMAND --help\n";

// What token and load share: where the password, the server and the proxy come from.
constexpr const char* client_notes =
    "token and load read the password from TONIC_TEXTUAL_PASSWORD, else one line on stdin;\n"
    "with --store, token asks for it only when a login is needed (the file keeps the token set,\n"
    "shared by every process that names it);\n"
    "a REDIS-URL is redis://[user][:password]@host:port/[<db>/]<key> (or redis+unix:///socket?key=K,\n"
    "or rediss:// for TLS, the server's certificate verified against the system's CAs or\n"
    "--store-ca-file, with a client certificate from --store-cert-file and --store-key-file):\n"
    "one token set for every process on every host that names it; the Redis password may come\n"
    "from TOKMGR_REDIS_PASSWORD instead of the URL;\n"
    "a POSTGRESQL-URL is postgresql://[user]@host:port/db?key=K[&table=T][&sslmode=verify-full...]:\n"
    "the same, in a PostgreSQL table; the password comes from TOKMGR_POSTGRES_PASSWORD or libpq's\n"
    "PGPASSFILE, never the URL; --lease-ttl is how long a Redis or PostgreSQL lease lives\n"
    "(default 60);\n"
    "--url defaults to TONIC_TEXTUAL_BASE_URL, else https://textual.tonic.ai; --user to\n"
    "TONIC_TEXTUAL_USERNAME.\n"
    "--proxy http://[USER:PASSWORD@]HOST:PORT defaults to https_proxy / HTTPS_PROXY for https://\n"
    "URLs, http_proxy for http://, then all_proxy / ALL_PROXY; no_proxy / NO_PROXY lists the\n"
    "hosts reached directly. Prefer the variables for a proxy password: ps shows options.\n";

constexpr const char* exit_notes =
    "exit status: 0 ok, 1 other failure, 2 usage, 3 credentials or refresh token rejected,\n"
    "4 network or TLS failure, 5 protocol error.\n";

void print_usage(std::string_view command) {
    std::cout << "usage:\n";
    if (command == "serve") {
        std::cout << serve_synopsis << '\n' << exit_notes;
    } else if (command == "token" || command == "load") {
        std::cout << (command == "token" ? token_synopsis : load_synopsis) << '\n' << client_notes << exit_notes;
    } else {
        std::cout << serve_synopsis << token_synopsis << load_synopsis << version_synopsis << '\n'
                  << client_notes << exit_notes;
    }
}

}  // namespace

int main(int argc, char** argv) {
    using namespace tokmgr_cli;
    const std::string_view command = argc > 1 ? std::string_view(argv[1]) : std::string_view();
    if (command == "--help" || command == "-h" || command == "help") {
        print_usage({});
        return exit_ok;
    }
    if (command == "--version") {
        std::cout << "tokmgr " << tokmgr::version << '\n';
        return exit_ok;
    }
    try {
        if (command == "serve") return run_serve(argc, argv);
        if (command == "token") return run_token(argc, argv);
        if (command == "load") return run_load(argc, argv);
        // The unknown word is not repeated: it might be a mistyped secret.
        std::cerr << (command.empty() ? "tokmgr: a command is needed: serve, token or load (see tokmgr --help)\n"
                                      : "tokmgr: unknown command; use serve, token or load (see tokmgr --help)\n");
        return exit_usage;
    } catch (const help_requested&) {
        print_usage(command);
        return exit_ok;
    } catch (const usage_error& e) {
        print_error(command, e.message + " (see tokmgr " + std::string(command) + " --help)");
        return exit_usage;
    } catch (const tokmgr::error& e) {
        print_error(command, e.what());
        return exit_status_for(e.code());
    } catch (const std::exception& e) {
        print_error(command, e.what());
        return exit_other;
    }
}
