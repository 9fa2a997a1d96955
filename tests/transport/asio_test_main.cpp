// The doctest runner for the Asio transport tests.
#include <ostream>  // before doctest, so it can print std::error_code

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
