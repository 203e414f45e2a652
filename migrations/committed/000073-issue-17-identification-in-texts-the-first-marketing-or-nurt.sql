--! Previous: sha1:7d15dcaad4432269bd8779a80cc8210b4ab7c316
--! Hash: sha1:c1c855d1e84f6c28c64783ae2d88d17e5b8c1070
--! Message: Issue 17, identification in texts: the first marketing or nurture text to a number, and every Nth one after (business_settings.sms_identify_every, default 10), names the business and says how to stop

alter table app_public.business_settings add column if not exists sms_identify_every integer not null default 10;
alter table app_public.business_settings drop constraint if exists business_settings_sms_identify_every_must_be_1_to_1000;
alter table app_public.business_settings add constraint business_settings_sms_identify_every_must_be_1_to_1000
  check (sms_identify_every between 1 and 1000);
comment on column app_public.business_settings.sms_identify_every is 'The first marketing or nurture text to a number, and every Nth one after it, names the business and says how to stop (“Ace Plumbing: … Reply STOP to opt out.”, added unless the text already does): N, 1 to 1000, default 10; 1 identifies every text.';
grant insert (sms_identify_every), update (sms_identify_every) on app_public.business_settings to :DATABASE_VISITOR;

--! Included messaging/sms_identified_body.sql
create or replace function app_private.sms_identified_body(tenant_id uuid, body text) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_name text;
  v_body text := sms_identified_body.body;
begin
  select nullif(pg_catalog.btrim(t.business_name), '') into v_name from app_public.tenants t where t.id = sms_identified_body.tenant_id;
  -- Who sends it (unless the text already names the business) and how to stop (unless it says STOP).
  if v_name is not null and pg_catalog.strpos(pg_catalog.lower(v_body), pg_catalog.lower(v_name)) = 0 then
    v_body := v_name || ': ' || v_body;
  end if;
  if v_body !~* '\mstop\M' then
    v_body := v_body || ' Reply STOP to opt out.';
  end if;
  if pg_catalog.length(v_body) > 1600 then
    raise exception 'This text is too long to carry who sends it and how to stop (% characters with them, at most 1600): shorten it', pg_catalog.length(v_body)
      using errcode = '22023';
  end if;
  return v_body;
end;
$$;

comment on function app_private.sms_identified_body(uuid, text) is $$A marketing text as it must go when it identifies its sender: the business name in front (unless the text already names the business) and "Reply STOP to opt out." at the end (unless it already says STOP). Errors: 22023 when the result would be over 1600 characters. Used by tg_messages__guard_outbound for the first marketing or nurture text to a number and every business_settings.sms_identify_every-th one.$$;
--! EndIncluded messaging/sms_identified_body.sql
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
    -- Past the reply window it is no longer an answer: held to hours and caps below.
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
