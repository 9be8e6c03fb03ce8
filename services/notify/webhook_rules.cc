#include "services/notify/webhook_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;

constexpr size_t kMaxUrlBytes = 2048;
constexpr size_t kMaxDescriptionChars = 200;
constexpr size_t kMaxEventTypes = 100;

// Distinct organisation names, in order of appearance.
class Parties {
 public:
  void Add(const std::string& name) {
    if (!IsResourceName(name, "organizations")) return;
    if (seen_.insert(name).second) names_.push_back(name);
  }
  std::vector<std::string> Take() { return std::move(names_); }

 private:
  std::set<std::string> seen_;
  std::vector<std::string> names_;
};

void OfBooking(const bk::Booking& b, Parties* p) {
  p->Add(b.payer_organization());
  for (const auto& s : b.cost_shares()) p->Add(s.organization());
}

void OfCharge(const bl::Charge& c, Parties* p) {
  p->Add(c.payer_organization());
  for (const auto& s : c.splits()) p->Add(s.organization());
  p->Add(c.owner_organization());
}

void OfInvoice(const bl::Invoice& i, Parties* p) {
  p->Add(i.payer_organization());
  for (const auto& payee : i.payees()) p->Add(payee.organization());
}

// The payload's full name and its parties; type "" when webhooks do not
// deliver the event.
struct Classified {
  std::string type;
  std::vector<std::string> organizations;
};

Classified ClassifyBooking(const bk::BookingEvent& e) {
  Parties p;
  using E = bk::BookingEvent;
  switch (e.payload_case()) {
    case E::kBookingCreated: OfBooking(e.booking_created().booking(), &p); break;
    case E::kBookingConfirmed: OfBooking(e.booking_confirmed().booking(), &p); break;
    case E::kBookingApproved: OfBooking(e.booking_approved().booking(), &p); break;
    case E::kBookingRejected: OfBooking(e.booking_rejected().booking(), &p); break;
    case E::kBookingCancelled: OfBooking(e.booking_cancelled().booking(), &p); break;
    case E::kBookingCheckedIn: OfBooking(e.booking_checked_in().booking(), &p); break;
    case E::kBookingCheckedOut: OfBooking(e.booking_checked_out().booking(), &p); break;
    case E::kBookingMissed: OfBooking(e.booking_missed().booking(), &p); break;
    case E::kBookingExpired: OfBooking(e.booking_expired().booking(), &p); break;
    case E::kBookingIntervalChanged: OfBooking(e.booking_interval_changed().booking(), &p); break;
    case E::kLeaseRequested: p.Add(e.lease_requested().lease().lessee_organization()); break;
    case E::kLeaseApproved: p.Add(e.lease_approved().lease().lessee_organization()); break;
    case E::kLeaseRejected: p.Add(e.lease_rejected().lease().lessee_organization()); break;
    case E::kLeaseCancelled: p.Add(e.lease_cancelled().lease().lessee_organization()); break;
    case E::kLeaseHandedOver: p.Add(e.lease_handed_over().lease().lessee_organization()); break;
    case E::kLeaseReturned: p.Add(e.lease_returned().lease().lessee_organization()); break;
    case E::kLeaseExtended: p.Add(e.lease_extended().lease().lessee_organization()); break;
    case E::kLeaseClosed: p.Add(e.lease_closed().lease().lessee_organization()); break;
    case E::kProjectCreated:
      for (const auto& x : e.project_created().project().participants()) p.Add(x.organization());
      break;
    case E::kProjectUpdated:
      for (const auto& x : e.project_updated().project().participants()) p.Add(x.organization());
      for (const auto& x : e.project_updated().previous_participants()) p.Add(x.organization());
      break;
    case E::kServiceOrderCreated: p.Add(e.service_order_created().service_order().client_organization()); break;
    case E::kServiceOrderQuoted: p.Add(e.service_order_quoted().service_order().client_organization()); break;
    case E::kServiceOrderQuoteAccepted:
      p.Add(e.service_order_quote_accepted().service_order().client_organization());
      break;
    case E::kServiceOrderSamplesReceived:
      p.Add(e.service_order_samples_received().service_order().client_organization());
      break;
    case E::kServiceOrderScheduled: p.Add(e.service_order_scheduled().service_order().client_organization()); break;
    case E::kServiceOrderUnscheduled:
      p.Add(e.service_order_unscheduled().service_order().client_organization());
      break;
    case E::kServiceOrderStarted: p.Add(e.service_order_started().service_order().client_organization()); break;
    case E::kServiceOrderReportDelivered:
      p.Add(e.service_order_report_delivered().service_order().client_organization());
      break;
    case E::kServiceOrderReportAccepted:
      p.Add(e.service_order_report_accepted().service_order().client_organization());
      break;
    case E::kServiceOrderReportDisputed:
      p.Add(e.service_order_report_disputed().service_order().client_organization());
      break;
    case E::kServiceOrderCancelled: p.Add(e.service_order_cancelled().service_order().client_organization()); break;
    case E::kQuotaSet: p.Add(e.quota_set().quota().organization()); break;
    case E::kQuotaDeleted: p.Add(e.quota_deleted().quota().organization()); break;
    default: return {};
  }
  return {"", p.Take()};
}

Classified ClassifyBilling(const bl::BillingEvent& e) {
  Parties p;
  using E = bl::BillingEvent;
  switch (e.payload_case()) {
    case E::kChargePosted: OfCharge(e.charge_posted().charge(), &p); break;
    case E::kCorrectionPosted:
      if (e.correction_posted().has_charge()) OfCharge(e.correction_posted().charge(), &p);
      break;
    case E::kSubsidyApplied: p.Add(e.subsidy_applied().line().beneficiary_organization()); break;
    case E::kInvoiceIssued: OfInvoice(e.invoice_issued().invoice(), &p); break;
    case E::kInvoicePaid: OfInvoice(e.invoice_paid().invoice(), &p); break;
    case E::kInvoiceVoided: OfInvoice(e.invoice_voided().invoice(), &p); break;
    case E::kPaymentRecorded:
      p.Add(e.payment_recorded().payment().payer());
      p.Add(e.payment_recorded().payment().payee());
      break;
    case E::kSettlementComputed:
      for (const auto& x : e.settlement_computed().settlement().positions()) p.Add(x.organization());
      break;
    case E::kSettlementCleared:
      for (const auto& x : e.settlement_cleared().settlement().positions()) p.Add(x.organization());
      break;
    case E::kDepositChanged:
      p.Add(e.deposit_changed().deposit().lessee_organization());
      p.Add(e.deposit_changed().deposit().owner_organization());
      break;
    default: return {};
  }
  return {"", p.Take()};
}

Classified ClassifyNotify(const v1::NotifyEvent& e) {
  Parties p;
  if (e.payload_case() != v1::NotifyEvent::kWebhookDisabled) return {};
  p.Add(e.webhook_disabled().organization());
  return {"", p.Take()};
}

// The full name of the payload set in the envelope's oneof "payload".
std::string PayloadType(const google::protobuf::Message& envelope) {
  const auto* d = envelope.GetDescriptor();
  const auto* oneof = d->FindOneofByName("payload");
  if (oneof == nullptr) return "";
  const auto* field = envelope.GetReflection()->GetOneofFieldDescriptor(envelope, oneof);
  if (field == nullptr || field->message_type() == nullptr) return "";
  return field->message_type()->full_name();
}

template <typename Envelope, typename Classify>
absl::StatusOr<std::optional<WebhookEvent>> Decode(const StreamEvent& entry, Classify classify) {
  Envelope envelope;
  if (!envelope.ParseFromString(entry.payload)) {
    return MakeError(absl::StatusCode::kInvalidArgument, "UNDECODABLE_EVENT",
                     absl::StrCat("cannot parse ", entry.type, " ", entry.stream_id));
  }
  Classified c = classify(envelope);
  if (c.organizations.empty()) return std::optional<WebhookEvent>();
  if (envelope.header().event_id().empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "UNDECODABLE_EVENT",
                     absl::StrCat(entry.type, " ", entry.stream_id, " has no event id"));
  }
  WebhookEvent out;
  out.event_id = envelope.header().event_id();
  out.event_type = PayloadType(envelope);
  if (!IsWebhookEventType(out.event_type)) return std::optional<WebhookEvent>();
  out.event_time = FromProto(envelope.header().event_time());
  out.organizations = std::move(c.organizations);
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  if (!google::protobuf::util::MessageToJsonString(envelope, &out.envelope_json, options).ok()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "UNDECODABLE_EVENT",
                     absl::StrCat("cannot render ", entry.type, " ", entry.stream_id, " as JSON"));
  }
  return std::optional<WebhookEvent>(std::move(out));
}

// Why the text between the brackets of a URL host is not an IPv6 address
// (inet_pton's IPv6 syntax, no zone id); "" when it is one.
std::string HostIpv6Problem(absl::string_view literal) {
  if (literal.empty()) return "the brackets are empty; put an IPv6 address in them, as in [2001:db8::1]";
  if (absl::StrContains(literal, "%")) {
    return "an IPv6 zone id (the part from '%') names an interface of one machine; remove it";
  }
  const std::string text(literal);
  struct in6_addr address;
  if (inet_pton(AF_INET6, text.c_str(), &address) != 1) {
    return absl::StrCat("\"", text.substr(0, 64),
                        "\" in brackets is not an IPv6 address; write one as in [2001:db8::1]");
  }
  return "";
}

// Why `host` (no brackets, no port) is neither a DNS name nor an IPv4
// literal; "" when it is one. A DNS name: labels of letters, digits and
// '-', 1 to 63 characters each, neither starting nor ending with '-',
// separated by single dots, at most 253 characters, optionally one final
// dot (the root). A host whose last label is all digits is no DNS name (no
// top-level domain is numeric) and must be an IPv4 literal: four decimal
// numbers 0 to 255 without leading zeros (10.0.0.1), no final dot.
std::string HostNameProblem(absl::string_view host) {
  for (char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (!absl::ascii_isalnum(u) && c != '-' && c != '.') {
      return "use letters, digits, '-' and '.' (or an IPv6 address in brackets)";
    }
  }
  absl::string_view name = host;
  if (absl::EndsWith(name, ".")) name.remove_suffix(1);  // the root: "example.com."
  if (name.empty()) return "it has no name before the dot";
  if (name.size() > 253) return "a host name is at most 253 characters";
  std::vector<absl::string_view> labels = absl::StrSplit(name, '.');
  const absl::string_view last = labels.back();
  if (!last.empty() && std::all_of(last.begin(), last.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c));
      })) {
    const std::string text(host);
    struct in_addr address;
    if (inet_pton(AF_INET, text.c_str(), &address) != 1) {
      return absl::StrCat("\"", text.substr(0, 64),
                          "\" is not an IPv4 address; write four numbers 0 to 255 without leading zeros (10.0.0.1)");
    }
    return "";
  }
  for (absl::string_view label : labels) {
    if (label.empty()) return "a dot at the start or two dots in a row leave an empty label";
    if (label.size() > 63) return "a label (the text between dots) is at most 63 characters";
    if (label.front() == '-' || label.back() == '-') return "a label must not start or end with '-'";
  }
  return "";
}

std::string Hex(const unsigned char* data, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), n));
}

}  // namespace

const std::vector<std::string>& WebhookEventTypes() {
  static const std::vector<std::string>* const kTypes = [] {
    auto* types = new std::vector<std::string>();
    const std::vector<std::pair<std::string, std::vector<std::string>>> kGroups = {
        {"labshare.booking.v1.",
         {"BookingCreated", "BookingConfirmed", "BookingApproved", "BookingRejected", "BookingCancelled",
          "BookingCheckedIn", "BookingCheckedOut", "BookingMissed", "BookingExpired", "BookingIntervalChanged",
          "LeaseRequested", "LeaseApproved", "LeaseRejected", "LeaseCancelled", "LeaseHandedOver", "LeaseReturned",
          "LeaseExtended", "LeaseClosed", "ProjectCreated", "ProjectUpdated", "ServiceOrderCreated",
          "ServiceOrderQuoted", "ServiceOrderQuoteAccepted", "ServiceOrderSamplesReceived", "ServiceOrderScheduled",
          "ServiceOrderUnscheduled", "ServiceOrderStarted", "ServiceOrderReportDelivered",
          "ServiceOrderReportAccepted", "ServiceOrderReportDisputed", "ServiceOrderCancelled", "QuotaSet",
          "QuotaDeleted"}},
        {"labshare.billing.v1.",
         {"ChargePosted", "CorrectionPosted", "SubsidyApplied", "InvoiceIssued", "InvoicePaid", "InvoiceVoided",
          "PaymentRecorded", "SettlementComputed", "SettlementCleared", "DepositChanged"}},
        {"labshare.notify.v1.", {"WebhookDisabled"}},
    };
    for (const auto& [prefix, names] : kGroups) {
      for (const auto& n : names) types->push_back(prefix + n);
    }
    std::sort(types->begin(), types->end());
    return types;
  }();
  return *kTypes;
}

bool IsWebhookEventType(absl::string_view type) {
  const auto& all = WebhookEventTypes();
  return std::binary_search(all.begin(), all.end(), type);
}

absl::StatusOr<std::optional<WebhookEvent>> DecodeWebhookEvent(const StreamEvent& entry) {
  if (entry.type == "labshare.booking.v1.BookingEvent") {
    return Decode<bk::BookingEvent>(entry, ClassifyBooking);
  }
  if (entry.type == "labshare.billing.v1.BillingEvent") {
    return Decode<bl::BillingEvent>(entry, ClassifyBilling);
  }
  if (entry.type == "labshare.notify.v1.NotifyEvent") {
    return Decode<v1::NotifyEvent>(entry, ClassifyNotify);
  }
  return std::optional<WebhookEvent>();
}

std::string DeliveryIdOf(absl::string_view event_id) {
  if (ValidResourceId(event_id)) return std::string(event_id);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(event_id.data()), event_id.size(), digest);
  return Hex(digest, 16);
}

std::string WebhookBody(const WebhookEvent& event, absl::string_view delivery_id, absl::string_view organization,
                        absl::string_view webhook) {
  std::string out = "{\"id\":\"";
  AppendJsonEscaped(&out, delivery_id);
  absl::StrAppend(&out, "\",\"type\":\"");
  AppendJsonEscaped(&out, event.event_type);
  absl::StrAppend(&out, "\",\"time\":\"",
                  absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", event.event_time, absl::UTCTimeZone()),
                  "\",\"organization\":\"");
  AppendJsonEscaped(&out, organization);
  absl::StrAppend(&out, "\",\"webhook\":\"");
  AppendJsonEscaped(&out, webhook);
  absl::StrAppend(&out, "\",\"event\":", event.envelope_json.empty() ? "{}" : event.envelope_json, "}");
  return out;
}

std::string WebhookBodyTraceId(absl::string_view body) {
  google::protobuf::Struct doc;
  if (!google::protobuf::util::JsonStringToMessage(std::string(body), &doc).ok()) return "";
  const google::protobuf::Struct* at = &doc;
  for (const char* name : {"event", "header"}) {
    auto it = at->fields().find(name);
    if (it == at->fields().end() || !it->second.has_struct_value()) return "";
    at = &it->second.struct_value();
  }
  auto it = at->fields().find("traceId");
  return it == at->fields().end() ? "" : it->second.string_value();
}

std::string WebhookSignature(absl::string_view secret, absl::string_view id, absl::string_view timestamp,
                             absl::string_view body) {
  const std::string message = absl::StrCat(id, ".", timestamp, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &len);
  return absl::StrCat("v1=", Hex(mac, len));
}

std::string NewWebhookSecret() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    // No randomness: never hand out a predictable secret.
    LogError("RAND_bytes failed while making a webhook secret");
    std::abort();
  }
  return absl::StrCat("whsec_", Hex(raw, sizeof raw));
}

absl::Status CheckWebhookUrl(absl::string_view url, const std::string& field) {
  auto bad = [&](const std::string& why) {
    return InvalidField(field, absl::StrCat("the endpoint URL ", why));
  };
  // A TCP port: 1..65535 in decimal digits.
  auto port_ok = [](absl::string_view port) {
    if (port.empty() || port.size() > 5) return false;
    uint32_t value = 0;
    for (char c : port) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
      value = value * 10 + static_cast<uint32_t>(c - '0');
    }
    return value >= 1 && value <= 65535;
  };
  if (url.empty()) return bad("is required");
  if (url.size() > kMaxUrlBytes) return bad("is longer than 2048 bytes");
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return bad("must not contain spaces, control or non-ASCII characters");
  }
  if (!absl::StartsWith(url, "https://")) return bad("must start with https://");
  if (absl::StrContains(url, "#")) return bad("must not have a fragment (#...)");
  absl::string_view rest = url.substr(8);
  const size_t end = rest.find_first_of("/?");
  absl::string_view authority = rest.substr(0, end);
  if (absl::StrContains(authority, "@")) return bad("must not carry a user name or password");
  if (authority.empty()) return bad("has no host");
  absl::string_view host = authority;
  if (host.front() == '[') {
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) return bad("has a malformed IPv6 host (no closing ']')");
    absl::string_view after = host.substr(close + 1);
    if (!after.empty() && (after.front() != ':' || !port_ok(after.substr(1)))) {
      return bad("has a malformed port (1 to 65535)");
    }
    const std::string why = HostIpv6Problem(host.substr(1, close - 1));
    if (!why.empty()) return bad(absl::StrCat("has a malformed host: ", why));
  } else {
    const size_t colon = host.find(':');
    if (colon != absl::string_view::npos) {
      absl::string_view port = host.substr(colon + 1);
      host = host.substr(0, colon);
      if (!port_ok(port)) return bad("has a malformed port (1 to 65535)");
    }
    if (host.empty()) return bad("has no host");
    const std::string why = HostNameProblem(host);
    if (!why.empty()) return bad(absl::StrCat("has a malformed host: ", why));
  }
  return absl::OkStatus();
}

absl::Status CheckWebhookEventTypes(const std::vector<std::string>& types, const std::string& field) {
  if (types.empty()) return InvalidField(field, "choose at least one event type");
  if (types.size() > kMaxEventTypes) return InvalidField(field, "at most 100 event types");
  std::set<std::string> seen;
  for (size_t i = 0; i < types.size(); ++i) {
    const std::string f = absl::StrCat(field, "[", i, "]");
    if (!IsWebhookEventType(types[i])) {
      return InvalidField(f, absl::StrCat("\"", types[i].substr(0, 100),
                                          "\" is not an event type webhooks deliver (see webhooks.proto)"));
    }
    if (!seen.insert(types[i]).second) return InvalidField(f, absl::StrCat(types[i], " is listed twice"));
  }
  return absl::OkStatus();
}

absl::Status CheckWebhookDescription(absl::string_view description, const std::string& field) {
  size_t chars = 0;
  for (char c : description) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++chars;
    if (static_cast<unsigned char>(c) < 0x20) return InvalidField(field, "no control characters");
  }
  if (chars > kMaxDescriptionChars) return InvalidField(field, "at most 200 characters");
  return absl::OkStatus();
}

absl::Duration WebhookRetryDelay(int attempt, absl::Duration initial, absl::Duration max, double unit) {
  absl::Duration d = initial;
  for (int i = 1; i < attempt && d < max; ++i) d *= 2;
  d = std::min(d, max);
  unit = std::clamp(unit, 0.0, 1.0);
  return d * (0.5 + 0.5 * unit);
}

}  // namespace labshare::notify
