// tokmgr/transport/async.hpp — kept for the files that include it: the
// template of asio_transport::async_send now comes with transport/asio.hpp,
// also under TOKMGR_SEPARATE_COMPILATION.
#pragma once

#include "asio.hpp"
