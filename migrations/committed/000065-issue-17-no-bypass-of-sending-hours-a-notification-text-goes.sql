--! Previous: sha1:4f07faa2efbc23e755ef958c8a1fe6af2125aad1
--! Hash: sha1:24a34db735a80d2c9df642e130ea00b1b2471f16
--! Message: Issue 17, no bypass of sending hours: a notification text goes only to a member's profile phone (queue_sms took it for any lead and skipped hours and caps), a conversation reply or auto-response only to the customer of a conversation they started, and a reply more than 24 hours after the customer's last call or text is held to legal hours and caps like marketing, at queuing and again at the claim

--! Included messaging/sms_reply_window.sql
create or replace function app_private.sms_reply_window() returns interval
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select interval '24 hours';
$$;

comment on function app_private.sms_reply_window() is $$How long after the customer's last call or text a reply in their conversation counts as an answer to them, and goes at once whatever the hour: 24 hours (the customer-care window carriers and WhatsApp use). Later replies are held to the recipient's legal sending hours and daily caps.$$;
--! EndIncluded messaging/sms_reply_window.sql
--! Included messaging/sms_customer_contact_at.sql
create or replace function app_private.sms_customer_contact_at(tenant_id uuid, conversation_id uuid, to_phone text)
  returns timestamptz
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Their last text, or when they started it (a call; a first text sets both).
  select coalesce(c.last_customer_message_time, c.created_at)
    from app_public.conversations c
   where c.tenant_id = sms_customer_contact_at.tenant_id
     and c.id = sms_customer_contact_at.conversation_id
     and c.customer_phone = sms_customer_contact_at.to_phone
     and c.started_by = 'customer';
$$;

comment on function app_private.sms_customer_contact_at(uuid, uuid, text) is $$The last time the customer reached the business in this conversation (its start, by their call or text, or their last text), when the conversation is one the customer started, with this phone, in this tenant; null otherwise. A reply (purpose conversation or auto_response) goes at once only within app_private.sms_reply_window() of that moment; later it is held to legal sending hours and caps like marketing; without such a conversation it is refused (tg_messages__guard_outbound).$$;
--! EndIncluded messaging/sms_customer_contact_at.sql
--! Included messaging/tg_messages__guard_outbound.sql
create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_contact_at timestamptz;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- A notification is for the business's own people: the phone of a member's profile, never a lead.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)) then
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
    if NEW.scheduled_for <= v_contact_at + app_private.sms_reply_window() then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below.
  elsif NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;
  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  return NEW;
end;
$$;

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require. No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a lead; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer's last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included messaging/claim_outbound_message.sql
create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
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
  -- Held to the recipient's hours: marketing, nurture, and a reply the customer's last call or text no
  -- longer covers (more than app_private.sms_reply_window() ago, or no longer their conversation).
  if v_message.purpose in ('marketing', 'nurture')
     or (v_message.purpose in ('conversation', 'auto_response')
         and coalesce(app_private.sms_customer_contact_at(v_message.tenant_id, v_message.conversation_id, v_message.to_phone)
                        + app_private.sms_reply_window() < app_hidden.clock_now(v_message.tenant_id), true)) then
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

comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text, or a reply past the reply window of its customer (app_private.sms_reply_window), is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;
--! EndIncluded messaging/claim_outbound_message.sql
--! Included messaging/queue_sms.sql
create or replace function app_public.queue_sms(lead_id uuid, body text, purpose text default 'marketing', idempotency_key text default null)
  returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'send texts');
  v_lead app_public.leads;
  v_from text;
begin
  -- A text a member starts toward a lead is marketing, whatever it says: held to the lead's legal
  -- sending hours and caps. (notification was accepted here and skipped both: it is for members.)
  if queue_sms.purpose is null or queue_sms.purpose <> 'marketing' then
    raise exception 'purpose must be marketing, got %: a text to a lead is marketing, held to legal sending hours and caps (notification texts go only to members of the business; answer a customer with sendConversationReply)',
      coalesce(pg_catalog.quote_literal(queue_sms.purpose), 'nothing')
      using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
  where l.tenant_id = v_tenant_id and l.id = queue_sms.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', queue_sms.lead_id using errcode = 'P0002';
  end if;
  if v_lead.phone is null then
    raise exception 'This lead has no phone number to text' using errcode = '22023';
  end if;
  select p.phone_number into v_from from app_public.phone_numbers p
  where p.tenant_id = v_tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
  order by p.date_provisioned, p.id limit 1;
  if v_from is null then
    raise exception 'This business has no active phone number that can text: request one with requestPhoneNumber first'
      using errcode = '22023';
  end if;
  return app_private.queue_message(v_tenant_id, v_lead.phone, v_from, queue_sms.body, queue_sms.purpose, 'human', null,
    v_lead.id, queue_sms.idempotency_key);
end;
$$;

comment on function app_public.queue_sms(uuid, text, text, text) is 'Queues a marketing text to a lead from the first active number of the business (agents and up). It is held to the legal sending hours of the recipient and the per-state daily cap: the returned message says in scheduled_for when it will go. purpose must be marketing (the default; kept as a parameter for existing clients): a text a member starts toward a lead is never a notification or a reply. idempotency_key (optional) makes a retried call return the first message. Errors: SB001 the number is on the do-not-contact list; 22023 no phone, no active number, an empty body or one over 1600 characters, a purpose other than marketing; P0002 no such lead; 42501 not an agent of the tenant.';
--! EndIncluded messaging/queue_sms.sql
