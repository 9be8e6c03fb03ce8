// The inventory RPC comments where black-box probes found the code apart
// from them (every case fails on the code before): maintenance windows
// starting before 1970 are listed by start and seen by CheckAccess (the
// index padded their seconds with %020d, which sorts -10 before -100), and
// index members of that format are rewritten at start-up
// (MigrateWindowIndexes).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class InventoryAudit5Test : public InventoryServiceTest {
 protected:
  v1::MaintenanceWindow MakeWindow(const std::string& instrument, absl::Time start, absl::Time end) {
    v1::CreateMaintenanceWindowRequest req;
    req.set_parent("instruments/" + instrument);
    *req.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(start);
    *req.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(end);
    v1::MaintenanceWindow w;
    grpc::Status s = Call(&Stub::CreateMaintenanceWindow, req, &w, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return w;
  }
  std::vector<std::string> Listed(const std::string& instrument) {
    v1::ListMaintenanceWindowsRequest list;
    list.set_parent("instruments/" + instrument);
    v1::ListMaintenanceWindowsResponse resp;
    EXPECT_TRUE(Call(&Stub::ListMaintenanceWindows, list, &resp, admin_).ok());
    std::vector<std::string> names;
    for (const auto& w : resp.maintenance_windows()) names.push_back(w.name());
    return names;
  }
  // The DURING_MAINTENANCE denial's message for ana on tem over [start, end),
  // empty when there is none.
  std::string MaintenanceDenial(absl::Time start, absl::Time end) {
    v1::CheckAccessRequest req;
    req.set_user("users/ana");
    req.set_instrument("instruments/tem");
    req.set_mode(tv1::ON_SITE);
    *req.mutable_interval()->mutable_start_time() = ToProto(start);
    *req.mutable_interval()->mutable_end_time() = ToProto(end);
    v1::CheckAccessResponse out;
    grpc::Status s = Call(&Stub::CheckAccess, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& d : out.denials()) {
      if (d.code() == v1::DURING_MAINTENANCE) return d.message();
    }
    return "";
  }
};

// ------------------------------------------------------------ 1. windows before 1970

// ListMaintenanceWindows: "by start". Windows starting at -100 s, -10 s and
// 3 s were listed -10 s, -100 s, 3 s, and CheckAccess over [-90 s, -50 s)
// stopped reading at -10 s (after the interval's end) before it met the
// window [-100 s, -40 s): no DURING_MAINTENANCE.
TEST_F(InventoryAudit5Test, WindowsStartingBefore1970AreListedByStartAndSeenByCheckAccess) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  const absl::Time epoch = absl::UnixEpoch();
  const v1::MaintenanceWindow late = MakeWindow("tem", epoch + absl::Seconds(3), epoch + absl::Seconds(1000));
  const v1::MaintenanceWindow near = MakeWindow("tem", epoch - absl::Seconds(10), epoch + absl::Seconds(50));
  const v1::MaintenanceWindow early = MakeWindow("tem", epoch - absl::Seconds(100), epoch - absl::Seconds(40));
  const std::vector<std::string> by_start = {early.name(), near.name(), late.name()};
  EXPECT_EQ(Listed("tem"), by_start);
  const std::string denial = MaintenanceDenial(epoch - absl::Seconds(90), epoch - absl::Seconds(50));
  EXPECT_TRUE(absl::StrContains(denial, early.name())) << "denial: '" << denial << "'";
  EXPECT_FALSE(absl::StrContains(denial, near.name())) << denial;
}

// Index members written by the earlier code ("%020d" seconds: "-0...0100")
// are rewritten by MigrateWindowIndexes, once; members of 1970 and after
// are of the new format already and stay.
TEST_F(InventoryAudit5Test, MigrationRekeysWindowsIndexedBefore1970ByTheOldPadding) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  const absl::Time epoch = absl::UnixEpoch();
  const v1::MaintenanceWindow late = MakeWindow("tem", epoch + absl::Seconds(3), epoch + absl::Seconds(1000));
  const v1::MaintenanceWindow near = MakeWindow("tem", epoch - absl::Seconds(10), epoch + absl::Seconds(50));
  const v1::MaintenanceWindow early =
      MakeWindow("tem", epoch - absl::Seconds(100) + absl::Milliseconds(250), epoch - absl::Seconds(40));
  const std::vector<std::string> by_start = {early.name(), near.name(), late.name()};
  auto members = pool_->Command({"ZRANGE", keys::Windows("tem"), "0", "-1"});
  ASSERT_TRUE(members.ok());
  ASSERT_EQ(members->elements.size(), 3u);
  // The format the earlier code wrote: "<%020d seconds>.<%09d nanos>|<id>".
  ASSERT_EQ(Redis({"DEL", keys::Windows("tem")}), 1);
  for (const auto* w : {&late, &near, &early}) {
    const std::string id = w->name().substr(w->name().rfind('/') + 1);
    ASSERT_EQ(Redis({"ZADD", keys::Windows("tem"), "0",
                     absl::StrCat(absl::StrFormat("%020d", w->interval().start_time().seconds()), ".",
                                  absl::StrFormat("%09d", w->interval().start_time().nanos()), "|", id)}),
              1);
  }
  EXPECT_EQ(Listed("tem"), (std::vector<std::string>{near.name(), early.name(), late.name()}));
  auto moved = manager_->MigrateWindowIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2);  // the two before 1970
  EXPECT_EQ(*manager_->MigrateWindowIndexes(), 0);
  EXPECT_EQ(Listed("tem"), by_start);
  auto after = pool_->Command({"ZRANGE", keys::Windows("tem"), "0", "-1"});
  ASSERT_TRUE(after.ok());
  std::vector<std::string> now;
  for (const auto& m : after->elements) now.push_back(m.str);
  std::vector<std::string> expected;
  for (const auto* w : {&early, &near, &late}) {
    expected.push_back(WindowSortKey(*w, w->name().substr(w->name().rfind('/') + 1)));
  }
  EXPECT_EQ(now, expected);
  const std::string denial = MaintenanceDenial(epoch - absl::Seconds(90), epoch - absl::Seconds(50));
  EXPECT_TRUE(absl::StrContains(denial, early.name())) << "denial: '" << denial << "'";
}

}  // namespace
}  // namespace labshare::inventory
