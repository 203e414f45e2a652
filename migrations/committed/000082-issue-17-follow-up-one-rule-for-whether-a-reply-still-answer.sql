--! Previous: sha1:f09e0a90d2cdc6187d84bf51e3ea0f69c05adf47
--! Hash: sha1:2fb4d4186f948295594e72d819e6bbcd70e80036
--! Message: Issue 17 follow-up: one rule for whether a reply still answers the customer, app_private.sms_reply_covers, used by the guard and the claim

-- Issue 17 follow-up: the rule "a reply within a day of the customer’s last call or text still answers
-- them" was written twice (the guard when a reply is written, the claim when it is sent): now one
-- function, app_private.sms_reply_covers.

--! Included messaging/sms_reply_covers.sql
create or replace function app_private.sms_reply_covers(contact_at timestamptz, at timestamptz) returns boolean
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select sms_reply_covers.at <= sms_reply_covers.contact_at + app_private.sms_reply_window();
$$;

comment on function app_private.sms_reply_covers(timestamptz, timestamptz) is $$Whether a reply sent at this moment still answers the customer whose last call or text was at contact_at: within app_private.sms_reply_window() (24 hours), bounds included. Null when contact_at is null (no conversation the customer started). The one rule of the guard (when the reply is written) and of the claim (when it is sent).$$;
--! EndIncluded messaging/sms_reply_covers.sql
--! Included messaging/tg_messages__guard_outbound.sql
create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_contact_at timestamptz;
  v_sent bigint;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing waits while the customer's last word on consent is an unclear opt-out.
  if NEW.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: the last text from % may have asked us to stop (it was unclear); no marketing goes to it until they answer the clarifying text with STOP or YES', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing needs the recipient's prior express written consent (TCPA), recorded and not revoked.
  if NEW.purpose in ('marketing', 'nurture') and not app_private.has_sms_marketing_consent(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: no current consent to marketing texts from % is recorded; record the consent the person gave (recordConsent: the disclosure they agreed to, when and how) before texting them marketing', NEW.to_phone
      using errcode = 'SB002';
  end if;
  -- A notification is for the business's own people: the phone of a member's profile, never a lead.
  -- A member types their profile phone themselves: a number that is a live lead's, or a customer's in a
  -- conversation, is a customer's whatever a profile says.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)
          or exists (select 1 from app_public.leads l
                      where l.tenant_id = NEW.tenant_id and l.phone = NEW.to_phone and l.deleted_at is null)
          or exists (select 1 from app_public.conversations c
                      where c.tenant_id = NEW.tenant_id and c.customer_phone = NEW.to_phone and c.status = 'active')) then
    raise exception 'Not sent: a notification text goes only to a member of this business (the phone of their profile); a text to a lead or customer is marketing, held to legal sending hours and caps'
      using errcode = '22023';
  end if;
  -- A reply belongs to a conversation the customer started, with that customer.
  if NEW.purpose in ('conversation', 'auto_response') then
    v_contact_at := app_private.sms_customer_contact_at(NEW.tenant_id, NEW.conversation_id, NEW.to_phone);
    if v_contact_at is null then
      raise exception 'Not sent: a % text answers a conversation the customer started, to that customer; this one has none (a text that starts a conversation is marketing)',
        pg_catalog.replace(NEW.purpose, '_', ' ') using errcode = '22023';
    end if;
    if app_private.sms_reply_covers(v_contact_at, NEW.scheduled_for) then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below, counted toward the
    -- cap like marketing, and, like marketing, sent only under a current marketing consent.
    NEW.held_as_marketing := true;
    if not app_private.has_sms_marketing_consent(NEW.tenant_id, NEW.to_phone) then
      raise exception 'Not sent: % last called or texted more than a day ago, so this reply is held like marketing, and no current consent to marketing texts from them is recorded; answer within a day of their last call or text, or record their consent (recordConsent)', NEW.to_phone
        using errcode = 'SB002';
    end if;
  elsif NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;
  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  -- The first marketing text to a number, and every sms_identify_every-th one, says who sends it and how
  -- to stop (counted under the same lock, so concurrent writers cannot both skip it).
  if NEW.purpose in ('marketing', 'nurture') then
    select pg_catalog.count(*) into v_sent from app_public.messages m
     where m.tenant_id = NEW.tenant_id and m.to_phone = NEW.to_phone and m.direction = 'outbound'
       and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled';
    if v_sent % coalesce((select s.sms_identify_every from app_public.business_settings s where s.tenant_id = NEW.tenant_id), 10) = 0 then
      NEW.body := app_private.sms_identified_body(NEW.tenant_id, NEW.body);
    end if;
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held), and SB002 without a current marketing consent for the number (app_public.consent_records), as do late replies. No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a number that is a live lead’s or a customer’s in an open conversation; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer’s last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. The first marketing or nurture text to a number, and every business_settings.sms_identify_every-th one (default 10), names the business and says how to stop (app_private.sms_identified_body). Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included messaging/claim_outbound_message.sql
create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
  v_late boolean;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > app_hidden.clock_now(v_message.tenant_id) + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- A nurture text goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_message.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_message.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_message.tenant_id, v_message.lead_id) is not null) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(v_message.to_phone, v_message.tenant_id) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Marketing held since an unclear opt-out of the customer does not go.
  if v_message.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient''s last text may have asked us to stop (unclear; checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- A reply the customer's last call or text no longer covers (more than app_private.sms_reply_window()
  -- ago, or no longer their conversation) is held like marketing from here on.
  v_late := v_message.held_as_marketing
    or (v_message.purpose in ('conversation', 'auto_response')
        and not coalesce(app_private.sms_reply_covers(
              app_private.sms_customer_contact_at(v_message.tenant_id, v_message.conversation_id, v_message.to_phone),
              app_hidden.clock_now(v_message.tenant_id)), false));
  -- Marketing, and a reply held like it, go only under a current consent: it may have been revoked since
  -- queuing (a member's revokeConsent racing the text being queued).
  if (v_message.purpose in ('marketing', 'nurture') or v_late)
     and not app_private.has_sms_marketing_consent(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: no current consent to marketing texts (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Held to the recipient's hours: marketing, nurture, and a late reply.
  if v_message.purpose in ('marketing', 'nurture') or v_late then
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, app_hidden.clock_now(v_message.tenant_id));
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, app_hidden.clock_now(v_message.tenant_id) + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
      return null;
    end if;
  end if;
  update app_public.messages m
  set status = 'sending', sending_at = now(), attempts = m.attempts + 1
  where m.id = v_message.id
  returning m.* into v_message;
  return v_message;
end;
$$;

comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or (marketing and nurture) is held after an unclear opt-out or has no current marketing consent any more (so is a reply past its customer’s reply window), or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text, or a reply past the reply window of its customer (app_private.sms_reply_window), is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;
--! EndIncluded messaging/claim_outbound_message.sql
