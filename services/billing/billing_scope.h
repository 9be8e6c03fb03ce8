// The scope half of billing's authorization: BillingPolicy()'s table (in
// billing_service.cc) asked about one resource. Kept apart from
// billing_common.h, whose rules header has a type of the same name.
#ifndef LABSHARE_SERVICES_BILLING_BILLING_SCOPE_H_
#define LABSHARE_SERVICES_BILLING_BILLING_SCOPE_H_

#include "absl/status/status.h"
#include "common/auth.h"
#include "labshare/billing/v1/billing.pb.h"

namespace labshare::billing {

// The scope check of `method` (its short name, e.g. "GetCharge") in
// BillingPolicy(): OK, or PERMISSION_DENIED ORGANIZATION_SCOPE.
absl::Status CheckScope(const char* method, const Principal& p, const ScopeFacts& facts);
// The parties and owner of a charge or a deposit, for CheckScope.
ScopeFacts ChargeFacts(const labshare::billing::v1::Charge& c);
ScopeFacts DepositFacts(const labshare::billing::v1::Deposit& d);

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_SCOPE_H_
