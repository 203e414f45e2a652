/**
 * Local phone-number provisioning (no Twilio credentials): "buys" a made-up number in the area code
 * (+1 <area code> 555 01xx, the range reserved for fiction) so the provisioning flow works end to end
 * in development. Nothing is bought and no webhook is configured anywhere.
 */
import { randomBytes, randomInt } from "node:crypto";
import type { BuyLocalNumberOptions, CreateMessagingServiceOptions, NumberProvisioner, ProvisionedNumber } from "./numbers.ts";

export class LocalNumberProvisioner implements NumberProvisioner {
  async buyLocalNumber(opts: BuyLocalNumberOptions): Promise<ProvisionedNumber> {
    const suffix = String(100 + randomInt(100)).padStart(4, "0");
    return {
      sid: `PN${randomBytes(16).toString("hex")}`,
      phoneNumber: `+1${opts.areaCode}555${suffix}`,
      friendlyName: opts.friendlyName,
      capabilities: ["voice", "sms", "mms"],
      region: null,
      webhooksConfigured: true,
    };
  }

  async createMessagingService(opts: CreateMessagingServiceOptions): Promise<{ sid: string; friendlyName: string }> {
    return { sid: `MG${randomBytes(16).toString("hex")}`, friendlyName: opts.friendlyName };
  }
}
