--! Previous: sha1:34aa329e4fbd2872622e1da491569df9fbd55091
--! Hash: sha1:66fef3ee6aef760b3dd712f95b76425e37c3e9fc
--! Message: sms_send_window resolves the recipient region through region_timezones; unknown region is 22023

-- Review fix: sms_send_window took the recipient's region as typed, so "Florida" or "US-FL" found no
-- state rule and only the national window applied. The region is now resolved through region_timezones
-- (postal code, ISO 3166-2 code or English name, as timezone_for_region accepts), and an unknown one is 22023.

create or replace function app_public.sms_send_window(phone text, region text default null, timezone text default null,
    at timestamptz default now()) returns app_public.sms_window
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_area app_public.phone_area_codes := app_public.phone_region(sms_send_window.phone);
  v_regions text[];
  v_country text;
  v_given app_public.region_timezones;
  v_jurisdictions text[];
  v_tz text;
  v_local timestamp;
  v_day date;
  v_from time;
  v_until time;
  v_result app_public.sms_window;
begin
  if sms_send_window.at is null then
    raise exception 'The moment to check is required' using errcode = '22023';
  end if;
  -- A number keeps its area code when its owner moves: the rules of both the state of the area code and
  -- the known state of the recipient apply, and the earlier end and later start win.
  if nullif(pg_catalog.btrim(sms_send_window.region), '') is not null then
    -- Same spellings as timezone_for_region: postal code, ISO 3166-2 code or English name.
    select r.* into v_given from app_public.region_timezones r
     where pg_catalog.upper(pg_catalog.btrim(sms_send_window.region)) in (r.region, r.country || '-' || r.region)
        or pg_catalog.lower(pg_catalog.btrim(sms_send_window.region)) = pg_catalog.lower(r.name)
     order by r.country = coalesce(v_area.country, 'US') desc
     limit 1;
    if v_given.region is null then
      raise exception 'Unknown region ''%'': give a US state or Canadian province as a postal code (FL), ISO code (US-FL) or name (Florida)', sms_send_window.region
        using errcode = '22023';
    end if;
  end if;
  v_regions := array_remove(array[v_area.country || '-' || v_area.region, v_given.country || '-' || v_given.region], null);
  v_tz := coalesce(nullif(pg_catalog.btrim(sms_send_window.timezone), ''), v_area.timezone, v_given.timezone);
  if v_tz is null or not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = v_tz) then
    raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
      using errcode = '22023';
  end if;
  -- National rules of every country involved (US when nothing says otherwise), plus the state rules.
  v_country := coalesce(v_area.country, v_given.country, 'US');
  select pg_catalog.array_agg(distinct w.jurisdiction order by w.jurisdiction) into v_jurisdictions
    from app_public.sms_send_windows w
   where w.jurisdiction = any (v_regions)
      or w.jurisdiction = any (array_remove(array[v_country, v_area.country, v_given.country], null));
  v_result.timezone := v_tz;
  v_result.jurisdictions := coalesce(v_jurisdictions, '{}');
  select pg_catalog.min(c.max_per_24h) into v_result.max_per_24h
    from app_public.sms_message_caps c where c.jurisdiction = any (v_result.jurisdictions);

  v_local := sms_send_window.at at time zone v_tz;
  -- Today and the next 7 local days: the first window (intersection of all rules) not yet over.
  for i in 0..7 loop
    v_day := v_local::date + i;
    select pg_catalog.max(w.allowed_from), pg_catalog.min(w.allowed_until) into v_from, v_until
      from app_public.sms_send_windows w
     where w.jurisdiction = any (v_result.jurisdictions) and w.isodow = extract(isodow from v_day)::int;
    continue when v_from is null or v_from >= v_until;
    if i = 0 and v_local::time >= v_from and v_local::time < v_until then
      v_result.allowed := true;
      v_result.next_allowed_at := sms_send_window.at;
      v_result.reason := '';
      return v_result;
    end if;
    if i > 0 or v_local::time < v_from then
      v_result.allowed := false;
      v_result.next_allowed_at := (v_day + v_from) at time zone v_tz;
      v_result.reason := pg_catalog.format('Outside the allowed hours (%s): it is %s there (%s); next allowed %s local time',
        pg_catalog.array_to_string(v_result.jurisdictions, ', '), pg_catalog.to_char(v_local, 'Dy HH24:MI'), v_tz,
        pg_catalog.to_char(v_day + v_from, 'Dy HH24:MI'));
      return v_result;
    end if;
  end loop;
  v_result.allowed := false;
  v_result.reason := 'No allowed hours in the coming week under ' || pg_catalog.array_to_string(v_result.jurisdictions, ', ');
  return v_result;
end;
$$;
comment on function app_public.sms_send_window(text, text, text, timestamptz) is $$Whether a marketing or nurture text may reach this recipient at the given moment (default now), and if not, the next moment it may. The rules are the national window (US, or CA for Canadian area codes) plus the stricter rules of the state of the area code of the number and of the known state of the recipient (region), all of which must hold; the local time is that of the given timezone, else that of the area code, else that of the state. Replies inside a conversation the customer started are not marketing and are not held to these hours. Errors: 22023 for an unknown region (give a postal code, ISO code or name), or when the local time cannot be told (no known area code, timezone or state) or the moment is null.$$;
grant execute on function app_public.sms_send_window(text, text, text, timestamptz) to :DATABASE_VISITOR;
