// Billing's view of inventory, read in process from an InventoryManager (as
// the billing service reads it over gRPC), for tests that run the services
// in one process.
#ifndef LABSHARE_TESTS_BILLING_DIRECT_INVENTORY_H_
#define LABSHARE_TESTS_BILLING_DIRECT_INVENTORY_H_

#include <string>

#include "services/billing/billing_manager.h"
#include "services/inventory/inventory_manager.h"

namespace labshare::billing::testing {

class DirectInventory final : public InventoryReader {
 public:
  explicit DirectInventory(labshare::inventory::InventoryManager* m) : m_(m) {
    service_.user_id = "billing";
    service_.roles = {Role::kService};
  }
  absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) override {
    return m_->LookupRate(service_, r);
  }
  absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) override {
    inv::GetInstrumentRequest r;
    r.set_name(name);
    return m_->GetInstrument(service_, r);
  }
  absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) override {
    inv::GetOrganizationRequest r;
    r.set_name(name);
    return m_->GetOrganization(service_, r);
  }

 private:
  labshare::inventory::InventoryManager* m_;
  Principal service_;
};

}  // namespace labshare::billing::testing

#endif  // LABSHARE_TESTS_BILLING_DIRECT_INVENTORY_H_
