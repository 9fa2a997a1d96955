// tokmgr/transport/async.hpp — asio_transport::async_send's template, for a
// file of a program built with TOKMGR_SEPARATE_COMPILATION that calls it.
// Header-only builds need not include this: transport/asio.hpp has it all.
#pragma once

#include "asio.hpp"
#include "impl/asio_async.hpp"
