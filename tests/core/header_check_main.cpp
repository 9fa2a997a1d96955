#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "header_check_registry.hpp"

TEST_CASE("every public header compiled on its own, in its own translation unit") {
    CHECK(tokmgr_header_check::headers().size() == TOKMGR_EXPECTED_HEADERS);
}
