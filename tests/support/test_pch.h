// The headers most test programs include, precompiled once and shared by
// every labshare_test target when LABSHARE_TEST_PCH is on (tests/run-all.sh,
// hence CI): parsing them was about half of each test's compile time.
// Force-included before each test's own includes; include guards make the
// test's own #includes of them free. Only stable, widely used headers
// belong here: a change to any of them rebuilds every test.
#ifndef LABSHARE_TESTS_SUPPORT_TEST_PCH_H_
#define LABSHARE_TESTS_SUPPORT_TEST_PCH_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

#endif  // LABSHARE_TESTS_SUPPORT_TEST_PCH_H_
