--! Previous: sha1:c203e05b314cd6cb264480f6ace7afb90deaedc4
--! Hash: sha1:fe194f1a97b3e60998c31748a2fd3160efacc851
--! Message: Late replies count toward the daily cap: a reply sent more than 24 hours after the customer's last call or text is marked held_as_marketing, held to hours and caps, and counted with marketing and nurture in the cap of the recipient (from the review of 000065 to 000067)

alter table app_public.messages add column if not exists held_as_marketing boolean not null default false;
comment on column app_public.messages.held_as_marketing is 'A reply sent more than 24 hours after the customer’s last call or text: no longer an answer to them, so it was held to legal sending hours and the daily cap like marketing, and counts toward that cap.';

--! Included nurture/sms_marketing_send_time.sql
create or replace function app_private.sms_marketing_send_time(tenant_id uuid, lead_id uuid, to_phone text, at timestamptz)
  returns timestamptz
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_window app_public.sms_window;
  v_at timestamptz := sms_marketing_send_time.at;
  v_cap_hit timestamptz;
begin
  for step in 1..60 loop
    v_window := app_hidden.recipient_send_window(sms_marketing_send_time.tenant_id, sms_marketing_send_time.lead_id,
      sms_marketing_send_time.to_phone, v_at);
    if not v_window.allowed then
      if v_window.next_allowed_at is null then
        raise exception 'Not queued: no legal sending time for % within a week (%)', sms_marketing_send_time.to_phone, v_window.reason
          using errcode = '22023';
      end if;
      v_at := v_window.next_allowed_at;
      continue;
    end if;
    if v_window.max_per_24h is null then
      return v_at;
    end if;
    -- The cap holds for every 24-hour period: look at each period that would contain v_at.
    select min(s.start_at + interval '24 hours') into v_cap_hit
    from (
      select m.scheduled_for as start_at
      from app_public.messages m
      where m.tenant_id = sms_marketing_send_time.tenant_id and m.to_phone = sms_marketing_send_time.to_phone
        and m.direction = 'outbound' and (m.purpose in ('marketing', 'nurture') or m.held_as_marketing) and m.status <> 'canceled'
        and m.scheduled_for > v_at - interval '24 hours' and m.scheduled_for <= v_at
      union all
      select v_at
    ) s
    where (
      select count(*) from app_public.messages m
      where m.tenant_id = sms_marketing_send_time.tenant_id and m.to_phone = sms_marketing_send_time.to_phone
        and m.direction = 'outbound' and (m.purpose in ('marketing', 'nurture') or m.held_as_marketing) and m.status <> 'canceled'
        and m.scheduled_for >= s.start_at and m.scheduled_for < s.start_at + interval '24 hours'
    ) >= v_window.max_per_24h;
    if v_cap_hit is null then
      return v_at;
    end if;
    v_at := greatest(v_cap_hit, v_at + interval '1 second');
  end loop;
  raise exception 'Not queued: the daily cap for % leaves no sending time soon enough', sms_marketing_send_time.to_phone using errcode = '22023';
end;
$$;

comment on function app_private.sms_marketing_send_time(uuid, uuid, text, timestamptz) is $$The first moment at or after at when a marketing or nurture text may reach the number: inside the legal sending hours of the recipient (sms_send_window: federal and state rules, in the recipient’s time zone) and allowed by the strictest per-state cap of messages per 24 hours, counting what is already queued or sent: marketing, nurture, and replies sent past the customer’s 24 hours (messages.held_as_marketing). Errors: 22023 when no such moment comes soon enough.$$;
--! EndIncluded nurture/sms_marketing_send_time.sql
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
    if NEW.scheduled_for <= v_contact_at + app_private.sms_reply_window() then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below, and counted
    -- toward the cap like marketing.
    NEW.held_as_marketing := true;
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

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held). No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a number that is a live lead’s or a customer’s in an open conversation; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer’s last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. The first marketing or nurture text to a number, and every business_settings.sms_identify_every-th one (default 10), names the business and says how to stop (app_private.sms_identified_body). Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
